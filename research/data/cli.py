"""`scaling data ...`: prepare token shards, inspect prepared datasets.

    scaling data prepare CORPUS --tokenizer bpe:4096|bytes|file:PATH|ids:V [--out DIR] [--val-fraction F] [--seed S]
                         [--text-field NAME] [--token-dtype uint16|uint32] [--batch-mb MB] [--json]
    scaling data info DATASET_DIR [--verify] [--json]
    scaling data info CORPUS --tokenizer T [--val-fraction F] [--seed S] [--verify] [--json]
    scaling data list [--json]

CORPUS is shakespeare, python-stdlib, python-site, synthetic[:states=64,branch=4,tokens=2000000,doc=16384,seed=0],
or a local file, directory or glob: .txt, .jsonl(.gz/.zst), .parquet, .arrow, a datasets save_to_disk
directory, or already tokenized .bin (raw or llm.c) / .npy files (with --tokenizer ids:V or file:PATH).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from research.data import data_root, load_dataset, prepare_dataset
from research.data.formats import LINE_BATCHES, ReadOptions
from research.data.prepare import resolve_dataset
from research.errors import UserError

CORPUS_HELP = (
    "shakespeare | python-stdlib | python-site | synthetic[:states=64,branch=4,tokens=2000000,doc=16384,seed=0] "
    "| a file, directory or glob of .txt, .jsonl[.gz|.zst], .parquet, .arrow, .bin, .npy, or a save_to_disk directory"
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare and inspect tokenized datasets",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    prepare = sub.add_parser("prepare", help="tokenize a corpus into cached shards (reused if already prepared)")
    prepare.add_argument("corpus", help=CORPUS_HELP)
    _add_dataset_options(prepare, tokenizer_required=True)
    prepare.add_argument("--out", help="write the dataset to this directory instead of the cache")
    prepare.add_argument("--batch-mb", type=float, default=4.0,
                         help="MiB of text per tokenizer batch; peak memory is about 50x this, and a JSON line "
                              "(parsed whole) may hold up to 32x this; default 4")
    prepare.add_argument("--json", action="store_true", help="print the manifest as JSON")
    prepare.set_defaults(func=_prepare)

    info = sub.add_parser("info", help="show a prepared dataset's manifest summary")
    info.add_argument("target", help="a dataset directory, or a corpus name together with --tokenizer")
    _add_dataset_options(info, tokenizer_required=False)
    info.add_argument("--verify", action="store_true", help="re-hash every file against the manifest")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_info)

    listing = sub.add_parser("list", help="list the datasets in the cache directory")
    listing.add_argument("--data-dir", help="cache root (default $SCALING_DATA_DIR or ~/.cache/scaling/data)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)


def _add_dataset_options(parser, tokenizer_required: bool) -> None:
    parser.add_argument("--tokenizer", required=tokenizer_required,
                        help="bytes | bpe:V (e.g. bpe:4096) | file:PATH (a HuggingFace tokenizer.json) | "
                             "ids:V (already tokenized input, vocabulary V)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of documents (of plays, for shakespeare) held out; default 0.1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation split; default 0")
    parser.add_argument("--data-dir", help="cache root (default $SCALING_DATA_DIR or ~/.cache/scaling/data)")
    parser.add_argument("--text-field", default="text",
                        help="JSON field / Parquet or Arrow column holding the text; default 'text'")
    parser.add_argument("--token-dtype", default="uint16", choices=("uint16", "uint32"),
                        help="dtype of raw (headerless) .bin token files; default uint16 as nanoGPT writes them")


def _summary(ds, seconds: float | None = None, reused: bool | None = None) -> str:
    m = ds.manifest
    lines = [f"{m['corpus']} / {m['tokenizer']['spec']}  ->  {ds.path}"]
    vocab = f"vocab {ds.vocab_size}"
    if m["tokenizer"].get("requested_vocab_size") not in (None, ds.vocab_size):
        vocab += f" (requested {m['tokenizer']['requested_vocab_size']})"
    lines.append(f"  {vocab}, {m['dtype']}, split by {m.get('split_unit', 'document')}, fingerprint {ds.fingerprint}")
    for split in ("train", "val"):
        r = m["splits"][split]
        lines.append(
            f"  {split:5s}: {r['documents']:>7,d} {'chunks' if m.get('split_unit') == 'chunk' else 'documents'} "
            f"{r['tokens']:>13,d} tokens "
            f"{r['bytes']:>13,d} bytes  {ds.bytes_per_token(split):.3f} bytes/token"
        )
    if m.get("entropy_rate_nats_per_byte") is not None:
        lines.append(f"  source entropy rate: {m['entropy_rate_nats_per_byte']:.6f} nats/byte")
    if seconds is not None:
        how = "reused cached dataset" if reused else "prepared"
        lines.append(f"  {how} in {seconds:.1f} s")
    return "\n".join(lines)


def _prepare(args) -> int:
    started = time.time()
    if not args.batch_mb > 0:
        raise UserError(f"--batch-mb {args.batch_mb} must be positive, e.g. 16")
    log = None if args.json else (lambda message: print(f"  {message} ...", file=sys.stderr, flush=True))
    batch_bytes = int(args.batch_mb * 2**20)
    options = ReadOptions(text_field=args.text_field, token_dtype=args.token_dtype,
                          max_line_bytes=LINE_BATCHES * batch_bytes)
    path, reused = prepare_dataset(args.corpus, args.tokenizer, val_fraction=args.val_fraction, seed=args.seed,
                                   data_dir=args.data_dir, out=args.out, log=log, options=options,
                                   batch_bytes=batch_bytes, progress=True)
    ds = load_dataset(path)
    if args.json:
        print(json.dumps({"path": str(path), "reused": reused, **ds.manifest}, indent=2))
    else:
        print(_summary(ds, time.time() - started, reused))
    return 0


def _info(args) -> int:
    from pathlib import Path


    target = Path(args.target).expanduser()
    if (target / "manifest.json").is_file():
        ds = load_dataset(target)
    elif args.tokenizer:
        options = ReadOptions(text_field=args.text_field, token_dtype=args.token_dtype)
        _, spec, _, path = resolve_dataset(args.target, args.tokenizer, args.val_fraction, args.seed, args.data_dir,
                                           options)
        if not (path / "manifest.json").is_file():
            raise UserError(f"{args.target} / {spec.name} is not prepared in {path.parent}; run "
                            f"'scaling data prepare {args.target} --tokenizer {spec.name}'")
        ds = load_dataset(path)
    else:
        raise UserError(f"{args.target} is not a dataset directory; pass a directory, or a corpus with --tokenizer")
    problems = ds.verify() if args.verify else []
    if args.json:
        print(json.dumps({"path": str(ds.path), "verified": args.verify and not problems,
                          "problems": problems, **ds.manifest}, indent=2))
    else:
        print(_summary(ds))
        if args.verify:
            print("  verify: all sha256 hashes match" if not problems else "  verify FAILED: " + "; ".join(problems))
    return 1 if problems else 0


def _list(args) -> int:
    root = data_root(args.data_dir)
    rows = []
    for path in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
        try:
            ds = load_dataset(path.parent)
        except UserError as err:
            rows.append({"path": str(path.parent), "error": str(err)})
            continue
        rows.append({"path": str(ds.path), "corpus": ds.manifest["corpus"], "tokenizer": ds.manifest["tokenizer"]["spec"],
                     "vocab_size": ds.vocab_size, "train_tokens": ds.n_tokens("train"), "val_tokens": ds.n_tokens("val"),
                     "fingerprint": ds.fingerprint})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no prepared datasets in {root}")
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['path']}: {row['error']}")
            else:
                print(f"{row['path']}: {row['corpus']} / {row['tokenizer']}, vocab {row['vocab_size']}, "
                      f"{row['train_tokens']:,} train + {row['val_tokens']:,} val tokens")
    return 0
