"""The method interface (``CIRMethod``) and the method registry."""
