"""`harness plan` for CIR-LVLM on Qwen2.5-VL-7B at the paper's batch of 512, on 1 and 8 GPUs.

    .venv/bin/python benchmarks/plan_qwen25vl_7b.py [--out DIR] [--image-size PX]

No 7B checkpoint is needed: the script writes a directory holding Qwen2.5-VL-7B-Instruct's
architecture (its config.json values: 28 decoder layers of width 3584, MLP 18944, 28 query and
4 key-value heads, vocabulary 152064; a 32-block vision tower of width 1280 merging into 3584)
and the test suite's stand-in Qwen2Tokenizer (captions are cut at max_caption_tokens anyway),
and `harness plan` builds it at one and two layers with random weights. Prints the plan for
the default settings, with gradient checkpointing, and with checkpointing plus micro-batches.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Qwen/Qwen2.5-VL-7B-Instruct's config.json (architecture fields)
TEXT = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}}
VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
          "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}

EXPERIMENT = """
experiment: qwen25vl_7b_plan
dataset: {{name: synthetic, image_size: {image_size}, synthetic: {{seed: 5, num_train: 64, num_val: 16, num_test: 8}}}}
method:
  name: cir_lvlm
  params:
    backbone: {{source: pretrained, lvlm_dir: {directory}, lora_rank: 16}}
train: {{batch_size: 512}}
"""


def write_architecture(directory: Path) -> Path:
    """config.json of Qwen2.5-VL-7B plus a stand-in tokenizer and processor file."""
    import torch
    from transformers import Qwen2_5_VLConfig

    from tests import stand_ins

    tokenizer = stand_ins.qwen2_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in stand_ins.QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(text_config=TEXT | {"pad_token_id": tokenizer.pad_token_id,
                                                  "eos_token_id": tokenizer.eos_token_id},
                              vision_config=VISION, image_token_id=ids["<|image_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    config.dtype = torch.bfloat16
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        '{"image_processor_type": "Qwen2VLImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073], '
        '"image_std": [0.26862954, 0.26130258, 0.27577711], "patch_size": 14, "merge_size": 2, '
        '"temporal_patch_size": 2}')
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where the architecture directory goes (default: temp)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="image side in px (224: CIRR-scale images as Qwen's processor sees them at least; "
                        "earlier figures were planned at 64)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.out or Path(temporary)
        directory = write_architecture(root / "qwen2.5-vl-7b-architecture")
        config = root / "plan.yaml"
        config.write_text(EXPERIMENT.format(directory=directory, image_size=args.image_size))
        harness = [sys.executable, "-m", "harness"]
        for settings in ([], ["--set", "train.gradient_checkpointing=true"],
                         ["--set", "train.gradient_checkpointing=true", "--set", "train.micro_batch_size=64"]):
            for gpus in ("1", "8"):
                print(f"\n$ harness plan ... --gpus {gpus} {' '.join(settings)}", flush=True)
                subprocess.run([*harness, "plan", str(config), "--gpus", gpus, *settings], check=True, cwd=root)


if __name__ == "__main__":
    main()
