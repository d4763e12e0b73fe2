"""Benchmark: semantic-ID schemes on the protocol-T catalogues (Toys, Sports, Office): RQ-KMeans, balanced
RQ-KMeans, PQ, OPQ, RQ-KMeans over text+CF content, RQ-VAE and LETTER.

For each dataset: MiniLM text embeddings of "title; brand; category" (cached), a SASRec teacher for the CF
item embeddings (loaded from --teacher-dir/<dataset>_sasrec, or trained there with semrec.cf if absent),
then every scheme YAML is fitted on CPU and compared (semrec.itemtok.compare): collisions before/after,
codes used and perplexity per level, reconstruction error, prefix cosine, CF-neighbour agreement, fit time.

    nice -n 10 python benchmarks/tokenizers_compare.py                      # full run (CPU)
    python benchmarks/tokenizers_compare.py --datasets office-t --quick     # smoke run, few epochs
    python benchmarks/tokenizers_compare.py --schemes tokenizers/pq.yaml --keep-rows   # add rows, keep the rest

Writes benchmarks/results/tokenizers_compare.{json,md,png} (--out to change). Reruns reuse the cached
embeddings and teachers. --keep-rows keeps the rows of the existing JSON for the (dataset, scheme) pairs
not run now (e.g. the RQ-VAE and LETTER fits, about 20 CPU minutes); every row records the commit that
computed it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMES = ["tokenizers/rqkmeans.yaml", "tokenizers/rqkmeans_balanced.yaml", "tokenizers/pq.yaml",
                   "tokenizers/opq.yaml", "tokenizers/rqkmeans_text_cf.yaml", "tokenizers/rqvae.yaml",
                   "tokenizers/letter.yaml"]


def default_teacher_dir() -> Path:
    from semrec.embeddings import default_cache_dir

    return default_cache_dir().parent / "teachers"


def load_or_train_teacher(ds, root: Path, *, epochs: int, seed: int, progress: bool):
    """A SASRec teacher for `ds`: root/<name>_sasrec_seed<seed> (or root/<name>_sasrec) if present, else
    trained on the train split only (64-d, history 10, lr 3e-3, early stopping on valid NDCG@10; test never
    read) and saved there. Returns (item embeddings (N, d), info)."""
    import torch

    from semrec.cf import TEACHERS, CFTeacher, SASRecConfig, evaluate_teacher
    from semrec.training.teacher import TeacherTrainConfig, train_teacher

    candidates = [root / f"{ds.name}_sasrec_seed{seed}", root / f"{ds.name}_sasrec"]
    path = next((c for c in candidates if (c / "config.json").is_file()), candidates[0])
    info = {"dir_name": path.name}
    if (path / "config.json").is_file():
        teacher = CFTeacher.from_pretrained(path, device="cpu")
        info["source"] = "loaded"
    else:
        t0 = time.perf_counter()
        teacher = TEACHERS["sasrec"](ds.num_items, SASRecConfig(hidden=64, max_len=10))
        res = train_teacher(teacher, ds, TeacherTrainConfig(epochs=epochs, batch_size=128, lr=3e-3, patience=3, seed=seed),
                            device="cpu", progress=progress)
        teacher.save_pretrained(path, extra={"dataset": ds.name, "protocol": ds.protocol, "best_epoch": res.best_epoch})
        info.update(source="trained", train_seconds=time.perf_counter() - t0, best_epoch=res.best_epoch)
    if teacher.num_items != ds.num_items:
        raise SystemExit(f"{path}: teacher has {teacher.num_items} items, {ds.name} has {ds.num_items}")
    teacher.eval()
    with torch.no_grad():
        valid = evaluate_teacher(teacher, ds.valid, ks=(10,))
        emb = teacher.item_embeddings().detach().float().cpu().numpy()
    info.update(type=teacher.name, hidden=int(emb.shape[1]), valid_ndcg10=valid.get("ndcg@10"),
                valid_hr10=valid.get("hr@10"))
    return emb, info


def kept_rows(path: Path, run: set[tuple[str, str]]) -> tuple[list[dict], dict]:
    """Rows of an earlier result file `path` whose (dataset, scheme name) is not in `run`, each with the
    commit that computed it, and that file's teacher records."""
    import json

    if not path.is_file():
        raise SystemExit(f"--keep-rows: {path} does not exist")
    old = json.loads(path.read_text())
    rows = [{"commit": old.get("commit"), **r} for r in old["rows"] if (r["dataset"], r["name"]) not in run]
    return rows, old.get("teachers", {})


def scheme_notes(name: str, by: dict[str, dict]) -> list[str]:
    """What to keep in mind when reading the new schemes' rows of dataset `name` (rows by scheme name)."""
    notes = []
    if "rqkmeans_balanced" in by:
        r = by["rqkmeans_balanced"]
        notes.append(f"{name} rqkmeans_balanced: every code holds at most ceil(N/256) items at every level "
                     f"(perplexity {'/'.join(f'{p:.1f}' for p in r['perplexity'])}); its recon rel. MSE re-encodes "
                     f"by nearest centroid, the balanced codes themselves leave {r['fit_relative_residual']:.3f}.")
    if "pq" in by or "opq" in by:
        notes.append(f"{name} pq/opq: code l describes sub-vector l (OPQ: of the vector after a learned rotation), "
                     "so a prefix describes part of the vector, not a coarse version of all of it: the 1st-code "
                     "cosine and CF agreement compare a part-of-vector description with RQ's coarse one.")
    if "rqkmeans_text_cf" in by:
        notes.append(f"{name} rqkmeans_text_cf: its content includes the SASRec item embeddings whose neighbours "
                     "define CF agreement, so part of that agreement is by construction; recon is in its own "
                     "text+cf space.")
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["toys-t", "sports-t", "office-t"])
    p.add_argument("--schemes", nargs="+", default=DEFAULT_SCHEMES)
    p.add_argument("--teacher-dir", type=Path, help="where <dataset>_sasrec teachers are loaded from or saved "
                                                     "(default: the semrec cache, ~/.cache/semrec/teachers)")
    p.add_argument("--teacher-epochs", type=int, default=20, help="cap when a teacher has to be trained")
    p.add_argument("--cache-dir", type=Path, help="embedding cache (default ~/.cache/semrec/embeddings)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--stem", default="tokenizers_compare")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="3 epochs per RQ-VAE/LETTER fit (smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--keep-rows", action="store_true",
                   help="keep the existing result file's rows for (dataset, scheme) pairs not run now")
    args = p.parse_args(argv)

    import torch

    from semrec.data import load_builtin
    from semrec.embeddings import default_cache_dir, item_texts
    from semrec.itemtok.compare import compare_schemes, write_comparison
    from semrec.itemtok.schemes import load_scheme
    from semrec.runtime import describe_machine, git_commit, seed_everything

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    cache = args.cache_dir or default_cache_dir()
    teacher_root = args.teacher_dir or default_teacher_dir()
    schemes = [REPO / s if not Path(s).is_absolute() and (REPO / s).is_file() else Path(s) for s in args.schemes]
    configs = [load_scheme(s) for s in schemes]
    if args.quick:
        import dataclasses
        import tempfile

        import yaml

        quick_dir = Path(tempfile.mkdtemp(prefix="semrec_quick_schemes_"))
        tmp = []
        for s, c in zip(schemes, configs):
            d = dataclasses.asdict(c)
            if c.scheme in ("rqvae", "letter"):
                d["quantizer"]["epochs"] = 3
            (quick_dir / s.name).write_text(yaml.safe_dump(d))
            tmp.append(quick_dir / s.name)
        schemes = tmp

    t_all = time.perf_counter()
    rows, teachers, commit = [], {}, git_commit()
    for name in args.datasets:
        ds = load_builtin(name)
        print(f"== {name}: {ds.num_items} items", file=sys.stderr)
        cf, tinfo = load_or_train_teacher(ds, teacher_root, epochs=args.teacher_epochs, seed=args.seed,
                                          progress=not args.no_progress)
        teachers[name] = tinfo
        t0 = time.perf_counter()
        ds_rows = compare_schemes(ds, schemes, cf_emb=cf, cache_dir=cache, device="cpu",
                                  progress=not args.no_progress)
        texts = item_texts(ds.items, configs[0].embedding.template)
        dup = len(texts) - len(set(texts))
        for r in ds_rows:
            r["teacher"] = f"SASRec-{tinfo['hidden']}d ({tinfo['source']})"
            r["duplicate_texts"] = dup
            r["commit"] = commit
        rows.extend(ds_rows)
        print(f"   done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    kept: list[dict] = []
    old_teachers: dict = {}
    run_now = list(args.datasets)
    if args.keep_rows:
        kept, old_teachers = kept_rows(args.out / f"{args.stem}.json",
                                       {(d, Path(s).stem) for d in args.datasets for s in schemes})
        teachers = {**old_teachers, **teachers}
        order = {Path(s).stem: i for i, s in enumerate(DEFAULT_SCHEMES)}
        datasets = list(dict.fromkeys([*args.datasets, *(r["dataset"] for r in kept)]))
        rows = sorted(rows + kept, key=lambda r: (datasets.index(r["dataset"]), order.get(r["name"], len(order))))
        args.datasets = datasets

    notes = []
    for name in args.datasets:
        by = {r["name"]: r for r in rows if r["dataset"] == name}
        if "rqvae" in by and "letter" in by:
            d1 = by["letter"]["cf_agree1"] - by["rqvae"]["cf_agree1"]
            d2 = by["letter"]["cf_agree2"] - by["rqvae"]["cf_agree2"]
            verdict = "raises" if d1 > 0 else "does NOT raise"
            notes.append(f"{name}: LETTER's collaborative term {verdict} CF-neighbour agreement over plain RQ-VAE "
                         f"(1st code {by['rqvae']['cf_agree1']:.3f} -> {by['letter']['cf_agree1']:.3f}, {d1:+.3f}; "
                         f"lift over chance {by['rqvae']['cf_lift1']:.2f} -> {by['letter']['cf_lift1']:.2f}; "
                         f"1st two codes {d2:+.3f}).")
        dup = next(iter(by.values()))["duplicate_texts"] if by else 0
        notes.append(f"{name}: {dup} items repeat another item's embedded text exactly, so at least {dup} "
                     f"collisions are unavoidable for any text-only scheme that codes each item by its nearest "
                     f"centroids (the balanced assignment may split identical vectors).")
        notes += scheme_notes(name, by)
        for r in by.values():
            low = [f"level {u['level']}: {u['codes_used']}/{u['codebook_size']}" for u in r["usage"]
                   if u.get("codebook_size") and u["codes_used"] < 0.8 * u["codebook_size"]]
            if low:
                notes.append(f"{name} {r['name']}: under 80% of the codebook used at " + ", ".join(low))
    for name, t in teachers.items():
        notes.append(f"{name} teacher: SASRec {t['hidden']}-d ({t['source']}, {t['dir_name']}), valid NDCG@10 "
                     f"{t['valid_ndcg10']:.4f}, HR@10 {t['valid_hr10']:.4f} (protocol T valid_5000, full ranking).")
    for c in sorted({r["commit"] for r in kept}):
        names = sorted({f"{r['dataset']} {r['name']}" for r in kept if r["commit"] == c})
        notes.append(f"Rows kept from the earlier run at commit {c} (--keep-rows, not refitted): {', '.join(names)}.")
    for name in sorted({r["dataset"] for r in kept} & set(old_teachers) & set(run_now)):
        before, now = old_teachers[name]["valid_ndcg10"], teachers[name]["valid_ndcg10"]
        if before != now:
            notes.append(f"{name}: the kept rows' CF-neighbour columns come from the earlier run's teacher (valid "
                         f"NDCG@10 {before:.4f}), the other rows' from this run's ({now:.4f}); the other columns "
                         f"do not depend on the teacher.")
    notes += [
        "Content: all-MiniLM-L6-v2 (bundled) text embeddings of '{title}[; brand: {brand}][; category: {category}]' "
        "(Office has no brand/category column: title only). CF neighbours: cosine of SASRec item embeddings, top-10.",
        "collisions before = N - distinct code tuples before resolution; all schemes resolve with the Sinkhorn "
        "last-level re-assignment (extra code only if a prefix group exceeds the last codebook).",
        "Items with identical title+brand+category have identical text embeddings.",
        "fit s = quantizer fit on CPU (embeddings cached, excluded); recon rel. MSE = mean |x - x_hat|^2 / mean |x|^2.",
    ]
    meta = {"benchmark": "tokenizers_compare", "protocol": "T", "datasets": args.datasets,
            "schemes": [str(Path(s).relative_to(REPO)) if str(s).startswith(str(REPO)) else str(s)
                        for s in args.schemes],
            "seed": args.seed, "quick": args.quick, "torch_threads": args.threads, "commit": commit,
            "machine": describe_machine("cpu"), "teachers": teachers,
            "total_seconds": round(time.perf_counter() - t_all, 1)}
    paths = write_comparison(rows, args.out, stem=args.stem, meta=meta, notes=notes,
                             title="Semantic-ID tokenizers on protocol-T catalogues (CPU)")
    print("\n".join(notes))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
