"""`semrec run RECIPE`: every stage an experiment needs, each cached by a hash of its inputs.

Stages, in data-flow order: dataset -> CF teacher(s) -> item tokenization (embeddings are cached
inside it by text hash) -> generative model (one per model row, seed and sweep value) -> evaluation.
A stage directory `<out>/stages/<stage>-<key>` is reused when its config and upstream keys are
unchanged; long training runs checkpoint every epoch under `<out>/checkpoints/` and resume after a kill.
Results: `<out>/results.json` (one row per run, plus mean/std over seeds) and `<out>/results.md`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from semrec import distributed
from semrec.errors import SemrecError
from semrec.artifacts import atomic_file, read_json, write_json
from semrec.pipeline.cache import StageCache
from semrec.pipeline.recipe import ModelSpec, Recipe, train_config
from semrec.pipeline.results import ResultRow

TABLE_METRICS = {"T": ["hr@1", "hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10", "cc"],
                 "P": ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "cc"]}


def dataset_fingerprint(ds) -> str:
    """A content hash of a dataset's splits and item titles (what every later stage depends on)."""
    h = hashlib.sha256()
    h.update(f"{ds.name}|{ds.protocol}|{ds.num_items}|{ds.num_users}".encode())
    for s in ("train", "valid", "test"):
        ex = ds.splits[s]
        for arr in (ex.users, ex.targets, ex.hist_items, ex.hist_offsets):
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\x1f".join("" if t is None else t for t in ds.titles).encode())
    return h.hexdigest()[:16]


class Pipeline:
    """Runs a Recipe into an output directory; see the module docstring."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, *, log: Callable[[str], None] = print,
                 progress: bool = True):
        from semrec.data import resolve_dataset
        from semrec.runtime import resolve_device

        distributed.init(resolve_device(recipe.device))  # under torchrun: training/evaluation on every rank
        main = distributed.is_main()
        self.recipe = recipe
        self.out = Path(out_dir)
        self.cache = StageCache(self.out / "stages")
        self.log = log if main else (lambda msg: None)
        self.progress = progress and main
        self.dataset = distributed.main_first(lambda: resolve_dataset(recipe.data))
        self.data_key = dataset_fingerprint(self.dataset)
        self.protocol = self.dataset.protocol if self.dataset.protocol in TABLE_METRICS else "T"

    # -- stages ---------------------------------------------------------------------------------
    def teacher(self, model_name: str, seed: int) -> Path:
        from semrec.cf import TEACHERS
        from semrec.config import load_config
        from semrec.training.teacher import TeacherTrainConfig, train_and_evaluate_teacher

        spec = self.recipe.teacher
        model_cfg = spec.config if model_name == spec.model else {}
        train_cfg = {**spec.train, "seed": seed}
        klass = TEACHERS[model_name]
        mcfg = load_config(klass.config_class, model_cfg, name=f"teacher {model_name} config")
        tcfg = load_config(TeacherTrainConfig, train_cfg, name=f"teacher {model_name} train")
        config = {"model": model_name, "config": dataclasses.asdict(mcfg), "train": dataclasses.asdict(tcfg)}
        work = self.out / "checkpoints" / f"teacher-{model_name}-{seed}"

        def build(tmp: Path) -> None:
            model, res, metrics = train_and_evaluate_teacher(
                model_name, mcfg, tcfg, self.dataset, device=self.recipe.device, checkpoint_dir=work,
                log_path=tmp / "train_log.jsonl", progress=self.progress)
            model.save_pretrained(tmp / "teacher", extra={"dataset": self.dataset.name})
            write_json(tmp / "metrics.json", {**metrics, "train": dataclasses.asdict(res)})

        d = self._stage("teacher", config, {"data": self.data_key}, build)
        shutil.rmtree(work, ignore_errors=True)
        return d

    def load_teacher(self, stage_dir: Path):
        from semrec.cf import CFTeacher
        from semrec.runtime import resolve_device

        return CFTeacher.from_pretrained(stage_dir / "teacher", device=resolve_device(self.recipe.device)).eval()

    def tokenization(self, scheme_path: str) -> Path:
        """The item IDs of a scheme: one artifact per recipe, whatever the run seeds. A collaborative scheme
        (LETTER, CF embeddings) reads the item embeddings of the recipe's teacher trained with the
        quantizer's own seed, so every generative-model seed sees the same IDs, as with RQ-KMeans/RQ-VAE."""
        from semrec.itemtok.artifact import ItemTokenization  # noqa: F401  (artifact type written below)
        from semrec.itemtok.schemes import build_tokenization, load_scheme

        path = self.recipe.resolve_path(scheme_path)
        scheme = load_scheme(path)
        needs_cf = scheme.scheme == "letter" or "cf" in scheme.embedding.content.split("+")
        inputs = {"data": self.data_key}
        teacher_dir = None
        if needs_cf:
            qseed = scheme.quantizer_config(str(path)).seed if scheme.scheme != "title" else 0
            teacher_dir = self.teacher(self.recipe.teacher.model, qseed)
            inputs["teacher"] = StageCache.key_of(teacher_dir)

        def build(tmp: Path) -> None:
            cf_emb = None
            if needs_cf:
                cf_emb = self.load_teacher(teacher_dir).item_embeddings().detach().cpu().numpy()
            tok = build_tokenization(self.dataset, scheme, cf_emb=cf_emb, cache_dir=self.out / "cache",
                                     device=self.recipe.device, progress=self.progress)
            tok.save_pretrained(tmp / "tokenization")

        # not distributed: rank 0 computes it, the others then read the cached stage
        return distributed.main_first(lambda: self.cache.run("ids", dataclasses.asdict(scheme), inputs, build,
                                                             log=self.log))

    def model(self, spec: ModelSpec, tok_dir: Path, teacher_dir: Path, seed: int, sweep: dict) -> Path:
        from semrec.itemtok.artifact import ItemTokenization
        from semrec.data.examples import training_examples
        from semrec.models import build_model
        from semrec.training import Trainer
        from semrec.training.losses import uses_teacher

        tcfg = train_config(self.recipe, spec, seed=seed, sweep_values=sweep)
        tcfg = dataclasses.replace(tcfg, monitor=self.recipe.eval.select_on, progress=self.progress)
        needs_teacher = uses_teacher(tcfg)
        config = {"model": spec.model, "config": spec.config, "train": dataclasses.asdict(tcfg)}
        config["train"].pop("progress", None)
        if spec.examples != "auto":  # only when set, so that earlier stages' keys stay valid
            config["examples"] = spec.examples
        inputs = {"data": self.data_key, "ids": StageCache.key_of(tok_dir)}
        if needs_teacher:
            inputs["teacher"] = StageCache.key_of(teacher_dir)
        label = f"{spec.name} seed {seed}" + "".join(f" {k}={v}" for k, v in sweep.items())
        work = self.out / "checkpoints" / f"model-{_slug(spec.name)}-{seed}-{_slug(str(sorted(sweep.items())))}"

        def build(tmp: Path) -> None:
            self.log(f"[model] training {label}")
            tok = ItemTokenization.from_pretrained(tok_dir / "tokenization", load_quantizer=False)
            model = build_model(spec.model, tok, spec.config, seed=seed)
            teacher = self.load_teacher(teacher_dir) if needs_teacher else None
            train_ex = training_examples(self.dataset, model.max_history, spec.examples)
            res = Trainer(model, tcfg, train_ex, valid=self.dataset.valid, teacher=teacher, out_dir=work,
                          protocol=self.protocol).fit(resume=True)
            model.save_pretrained(tmp / "model")
            write_json(tmp / "train.json", {
                "label": label, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                "best_valid": res.best_metric, "monitor": res.monitor, "stopped_early": res.stopped_early,
                "wall_time_s": res.wall_time_s, "history": res.history})

        d = self._stage("model", config, inputs, build)
        shutil.rmtree(work, ignore_errors=True)
        return d

    def split_metrics(self, model_dir: Path, teacher_dir: Path, split: str) -> dict:
        """The eval stage: metrics of a trained model on `split` (semrec.evaluation.evaluate), cached."""
        from semrec.evaluation import evaluate
        from semrec.models import load_model
        from semrec.runtime import resolve_device

        ev = self.recipe.eval
        config = {"split": split, "num_beams": ev.num_beams, "batch_size": ev.batch_size,
                  "max_rows": ev.max_test_rows if split == "test" else None}
        inputs = {"model": StageCache.key_of(model_dir), "teacher": StageCache.key_of(teacher_dir),
                  "data": self.data_key}

        def build(tmp: Path) -> None:
            device = resolve_device(self.recipe.device)
            model = load_model(model_dir / "model", device=device)
            teacher = self.load_teacher(teacher_dir)
            metrics = evaluate(model, self.dataset.splits[split], teacher=teacher, protocol=self.protocol,
                               num_beams=ev.num_beams, batch_size=ev.batch_size, max_rows=config["max_rows"],
                               progress=self.progress)
            write_json(tmp / "metrics.json", metrics)

        d = self._stage(f"eval-{split}", config, inputs, build)
        return read_json(d / "metrics.json")

    def _stage(self, stage: str, config: dict, inputs: dict[str, str], build: Callable[[Path], None]) -> Path:
        """`self.cache.run` for a distributed stage (training, evaluation). Under torchrun every rank runs
        `build` (its collectives need them all) when rank 0 finds the stage missing, but only rank 0's
        output is kept: the others build into a scratch directory, then get rank 0's stage path."""
        if not distributed.is_distributed():
            return self.cache.run(stage, config, inputs, build, log=self.log)
        if distributed.is_main():
            started = []

            def announced(tmp: Path) -> None:
                started.append(True)
                distributed.broadcast_object("compute")
                build(tmp)

            try:
                d = self.cache.run(stage, config, inputs, announced, log=self.log)
            except BaseException:
                if not started:
                    distributed.broadcast_object("failed")
                raise
            if not started:
                distributed.broadcast_object("reuse")
            distributed.broadcast_object(d.name)
            return d
        decision = distributed.broadcast_object(None)
        if decision == "failed":
            raise SemrecError(f"[{stage}] rank 0 failed (its error is printed above); stopping this rank too")
        if decision == "compute":
            with tempfile.TemporaryDirectory(prefix=f"semrec-{stage}-rank{distributed.rank()}-") as scratch:
                build(Path(scratch))
        return self.cache.root / distributed.broadcast_object(None)

    # -- the whole recipe -----------------------------------------------------------------------
    def run(self) -> dict:
        from semrec.runtime import describe_machine, git_commit, resolve_device

        r = self.recipe
        t_start = time.time()
        rows: list[ResultRow] = []
        device = resolve_device(r.device)
        common = {"dataset": self.dataset.name, "protocol": self.protocol, "split": "test", "device": str(device)}
        for seed in r.seeds:
            teacher_dir = self.teacher(r.teacher.model, seed)
            for tname in dict.fromkeys([r.teacher.model, *r.teachers_in_table]):
                tdir = teacher_dir if tname == r.teacher.model else self.teacher(tname, seed)
                m = read_json(tdir / "metrics.json")["test"]
                rows.append(ResultRow(name=_teacher_label(tname), model=tname, tokenizer=None, loss="ce", alpha=None,
                                      tau=None, **common, seed=seed, metrics=m,
                                      wall_time_s=read_json(tdir / "stage.json")["seconds"]))
            tok_dirs: dict[str, Path] = {}
            for spec in r.models:
                scheme = spec.tokenizer or r.tokenizer
                if scheme not in tok_dirs:
                    tok_dirs[scheme] = self.tokenization(scheme)
                tok_dir = tok_dirs[scheme]
                candidates = []
                for sweep in _grid(spec.sweep):
                    mdir = self.model(spec, tok_dir, teacher_dir, seed, sweep)
                    valid = read_json(mdir / "train.json")["best_valid"]
                    candidates.append((valid if valid is not None else -math.inf, sweep, mdir))
                best_valid, sweep, mdir = max(candidates, key=lambda c: c[0])
                metrics = self.split_metrics(mdir, teacher_dir, "test")
                train_info = read_json(mdir / "train.json")
                tcfg = train_config(r, spec, seed=seed, sweep_values=sweep)
                rows.append(ResultRow(
                    name=spec.name, model=spec.model, tokenizer=Path(scheme).stem,
                    loss=tcfg.loss + ("+msl" if tcfg.msl else ""), alpha=tcfg.alpha if tcfg.loss == "tca" else None,
                    tau=tcfg.tau, **common, seed=seed,
                    metrics={k: v for k, v in metrics.items() if k != "wall_time_s"},
                    baseline=baseline_of(r, spec),
                    selected_on_valid={**sweep, r.eval.select_on: best_valid} if spec.sweep else None,
                    sweep_valid=[{**c[1], "valid": c[0]} for c in candidates] if spec.sweep else None,
                    train_wall_time_s=train_info["wall_time_s"], eval_wall_time_s=metrics.get("wall_time_s"),
                    epochs_run=train_info["epochs_run"], model_stage=mdir.name))
        result = {
            "recipe": r.name, "dataset": self.dataset.name, "protocol": self.protocol, "seeds": r.seeds,
            "data": _data_spec(r.data),  # how to reload the dataset (semrec.serving)
            "commit": git_commit(), "machine": describe_machine(device),
            "wall_time_s": round(time.time() - t_start, 1),
            # what the results cost to compute, reused stages included (wall_time_s is this invocation only)
            "compute_time_s": round(sum(self.cache.used.values()), 1), "rows": [row.to_dict() for row in rows],
        }
        result["summary"] = summarize(result["rows"], TABLE_METRICS[self.protocol])
        if distributed.is_main():  # rank 0 alone writes the results
            write_json(self.out / "results.json", result)
            md = results_markdown(result)
            with atomic_file(self.out / "results.md") as f:
                f.write(md)
        distributed.barrier()
        return result


# TrainConfig fields that only configure the CF signal: a TCA row and its NTP baseline may differ in these.
TCA_SETTINGS = ("loss", "alpha", "cf_temperature", "cf_top_k")


def baseline_of(recipe: Recipe, spec: ModelSpec) -> str | None:
    """The NTP model row a TCA row is compared with: the first with the same model, config, IDs, training
    examples and training settings apart from TCA_SETTINGS (TCA at alpha 0 is that row); else None."""
    def budget(s: ModelSpec) -> tuple:
        tcfg = dataclasses.asdict(train_config(recipe, s, seed=0))
        for k in TCA_SETTINGS:
            tcfg.pop(k)
        return s.model, s.config, s.tokenizer or recipe.tokenizer, s.examples, tcfg

    if train_config(recipe, spec, seed=0).loss != "tca":
        return None
    twins = [s.name for s in recipe.models
             if train_config(recipe, s, seed=0).loss == "ntp" and budget(s) == budget(spec)]
    return twins[0] if twins else None


def _data_spec(spec: str) -> str:
    """A recipe's `data` as resolve_dataset will find it again: a builtin name, or an absolute directory."""
    from semrec.data.builtin import BUILTIN_DATASETS

    return spec if spec in BUILTIN_DATASETS or not Path(spec).is_dir() else str(Path(spec).resolve())


def _grid(sweep: dict[str, list]) -> list[dict]:
    grid: list[dict] = [{}]
    for key, values in sweep.items():
        grid = [{**g, key: v} for g in grid for v in values]
    return grid


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)[:60]


def _teacher_label(name: str) -> str:
    return {"sasrec": "SASRec", "bert4rec": "BERT4Rec", "gru4rec": "GRU4Rec"}.get(name, name)


def summarize(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Mean and std (over seeds) of each metric, per row name, in first-seen order."""
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        entry = {"name": name, "n_seeds": len(group)}
        for m in metrics:
            vals = [r[m] for r in group if r.get(m) is not None]
            if vals:
                entry[m] = float(np.mean(vals))
                entry[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append(entry)
    return out


def results_markdown(result: dict) -> str:
    metrics = TABLE_METRICS[result["protocol"]]
    lines = [f"# {result['recipe']}: {result['dataset']} (protocol {result['protocol']}), test split",
             "", f"Seeds {result['seeds']}; commit `{result['commit']}`; {result['machine']}; "
             f"wall time {result['wall_time_s']} s" + (f" (all stages' compute time {result['compute_time_s']} s, "
                                                        "reused stages included)" if "compute_time_s" in result
                                                        else "") + ".", "",
             "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for s in result["summary"]:
        cells = []
        for m in metrics:
            if m not in s:
                cells.append("-")
            elif s["n_seeds"] > 1:
                cells.append(f"{s[m]:.4f} ± {s[m + '_std']:.4f}")
            else:
                cells.append(f"{s[m]:.4f}")
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    sel = [r for r in result["rows"] if r.get("selected_on_valid")]
    if sel:
        lines += ["", "Values chosen on the valid split:", ""]
        lines += [f"- {r['name']} seed {r['seed']}: {r['selected_on_valid']}" for r in sel]
    return "\n".join(lines) + "\n"


def run_recipe(recipe: Recipe, out_dir: str | Path, **kwargs: Any) -> dict:
    """Run every stage of `recipe` into `out_dir` and return the results dict."""
    return Pipeline(recipe, out_dir, **kwargs).run()
