"""`semrec run RECIPE`: every stage an experiment needs, each cached by a hash of its inputs.

Stages, in data-flow order: dataset -> CF teacher(s) -> item tokenization (embeddings are cached
inside it by text hash) -> generative model (one per model row, seed and sweep value) -> evaluation.
A stage directory `<out>/stages/<stage>-<key>` is reused when its config and upstream keys are
unchanged; long training runs checkpoint every epoch under `<out>/checkpoints/` and resume after a kill.
Results: `<out>/results.json` (one row per run, plus mean/std over seeds) and `<out>/results.md`.
Every table carries two reference rows scored by the same code as the models, MostPop and Random, the
list diagnostics (coverage@10, distinct top-1 items, share of slots taken by the 1% most popular items)
and the valid-split metric beside the test figures; a row whose NDCG@10 is not above MostPop's by more
than two standard errors of the paired per-row difference is flagged.
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
from semrec.runtime import bf16_autocast, describe_machine, git_commit, resolve_device

TABLE_METRICS = {"T": ["hr@1", "hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10", "cc"],
                 "P": ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "cc"],
                 # imported data: both protocols' figures
                 "custom": ["hr@1", "recall@5", "ndcg@5", "recall@10", "ndcg@10", "cc"]}
DIAGNOSTICS = ["coverage@10", "distinct_top1", "pop1%@10"]
BASELINES = ("MostPop", "Random")


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

        distributed.init(resolve_device(recipe.device))  # under torchrun: training/evaluation on every rank
        main = distributed.is_main()
        self.recipe = recipe
        self.out = Path(out_dir)
        self.cache = StageCache(self.out / "stages")
        self.log = log if main else (lambda msg: None)
        self.progress = progress and main
        self.dataset = distributed.main_first(lambda: resolve_dataset(recipe.data))
        self.data_key = dataset_fingerprint(self.dataset)
        self.protocol = self.dataset.protocol if self.dataset.protocol in TABLE_METRICS else "custom"
        self.popularity = train_popularity(self.dataset)
        self.choices_over_seeds: dict[str, dict] = {}  # row name -> its sweep values chosen over all seeds

    # -- stages ---------------------------------------------------------------------------------
    def teacher(self, model_name: str, seed: int) -> Path:
        from semrec.cf import TEACHERS
        from semrec.config import load_config
        from semrec.training.teacher import TeacherTrainConfig, save_teacher_run, train_and_evaluate_teacher

        spec = self.recipe.teacher
        model_cfg = spec.config if model_name == spec.model else {}
        train_cfg = {**spec.train, "seed": seed}
        klass = TEACHERS[model_name]
        mcfg = load_config(klass.config_class, model_cfg, name=f"teacher {model_name} config")
        tcfg = load_config(TeacherTrainConfig, train_cfg, name=f"teacher {model_name} train")
        config = {"model": model_name, "config": dataclasses.asdict(mcfg), "train": _stage_key(tcfg)}
        work = self.out / "checkpoints" / f"teacher-{model_name}-{seed}"

        def build(tmp: Path) -> None:
            model, res, metrics = train_and_evaluate_teacher(model_name, mcfg, tcfg, self.dataset,
                                                             device=self.recipe.device, checkpoint_dir=work,
                                                             progress=self.progress)
            save_teacher_run(tmp, model, res, metrics, tcfg, model_dir=tmp / "teacher")

        d = self._stage("teacher", config, {"data": self.data_key}, build)
        shutil.rmtree(work, ignore_errors=True)
        return d

    def load_teacher(self, stage_dir: Path):
        from semrec.cf import CFTeacher

        return CFTeacher.from_pretrained(stage_dir / "teacher", device=resolve_device(self.recipe.device)).eval()

    @staticmethod
    def teacher_excludes_history(stage_dir: Path) -> bool:
        """Whether a teacher stage was selected and scored with each row's history removed from its ranking
        (`exclude_history`): its lists, its table row and CC against it then rank only the items not read."""
        return bool(read_json(stage_dir / "metrics.json").get("exclude_history", False))

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
        from semrec.config import load_config
        from semrec.data.examples import training_examples
        from semrec.itemtok.artifact import ItemTokenization
        from semrec.models import MODELS, build_model
        from semrec.training import Trainer
        from semrec.training.losses import uses_teacher

        tcfg = train_config(self.recipe, spec, seed=seed, sweep_values=sweep)
        tcfg = dataclasses.replace(tcfg, monitor=self.recipe.eval.select_on, progress=self.progress)
        needs_teacher = uses_teacher(tcfg)
        # the model config with every default filled in: a changed default is a changed model
        klass = MODELS[spec.model].config_class
        mcfg = load_config(klass, spec.config, name=f"model '{spec.name}' config")
        config = {"model": spec.model, "config": _stage_key(mcfg), "train": _stage_key(tcfg)}
        config["train"].pop("progress", None)
        # the precision actually used, not the request; `bf16: true` once meant float32 on a CPU, so a bf16
        # run gets a key that no stage written then can have
        config["train"]["bf16"] = bf16_autocast(resolve_device(tcfg.device), tcfg.bf16)
        if config["train"]["bf16"]:
            config["train"]["autocast"] = "bf16"
        config["examples"] = spec.examples
        inputs = {"data": self.data_key, "ids": StageCache.key_of(tok_dir)}
        if needs_teacher:
            inputs["teacher"] = StageCache.key_of(teacher_dir)
        label = f"{spec.name} seed {seed}" + "".join(f" {k}={v}" for k, v in sweep.items())
        work = self.out / "checkpoints" / f"model-{_slug(spec.name)}-{seed}-{_slug(str(sorted(sweep.items())))}"

        def build(tmp: Path) -> None:
            self.log(f"[model] training {label}")
            cpu0 = time.process_time()
            tok = ItemTokenization.from_pretrained(tok_dir / "tokenization", load_quantizer=False)
            model = build_model(spec.model, tok, spec.config, seed=seed)
            teacher = self.load_teacher(teacher_dir) if needs_teacher else None
            train_ex = training_examples(self.dataset, model.max_history, spec.examples,
                                         every_item=model.learns_every_item)
            excluded = needs_teacher and self.teacher_excludes_history(teacher_dir)  # valid CC as in the tables
            res = Trainer(model, tcfg, train_ex, valid=self.dataset.valid, teacher=teacher, out_dir=work,
                          protocol=self.protocol, teacher_exclude_history=excluded).fit(resume=True)
            model.save_pretrained(tmp / "model")
            write_json(tmp / "train.json", {
                "label": label, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                "best_valid": res.best_metric, "monitor": res.monitor, "stopped_early": res.stopped_early,
                "wall_time_s": res.wall_time_s, "cpu_time_s": time.process_time() - cpu0, "history": res.history})

        d = self._stage("model", config, inputs, build)
        shutil.rmtree(work, ignore_errors=True)
        return d

    def split_metrics(self, model_dir: Path, teacher_dir: Path, split: str, popularity_correction: float = 0.0,
                      new_items: bool = False) -> tuple[dict, np.ndarray]:
        """The eval stage: metrics of a trained model on `split` (semrec.evaluation.evaluate), cached, and its
        (E,) target ranks (0 = not in the beam); decoded with `popularity_correction` s when s > 0
        (semrec.decoding.popularity_bias over the training popularity); `new_items`: on the split's rows whose
        target is not in the history only (semrec.training.trainer.new_item_rows)."""
        from semrec.decoding import popularity_bias
        from semrec.evaluation import evaluate
        from semrec.models import load_model
        from semrec.training.trainer import new_item_rows

        ev = self.recipe.eval
        config = {"split": split, "num_beams": ev.num_beams, "batch_size": ev.batch_size,
                  "max_rows": ev.max_test_rows if split == "test" else None, "diagnostics": 1}
        if ev.decode != "beam":  # only then: beam stages keep the keys they were cached under
            config["decode"] = ev.decode
        if ev.bf16:  # only when on: the stage keys of float32 evaluations made before this option stay valid
            config["bf16"] = True
        if popularity_correction:  # likewise: uncorrected evaluations keep their keys
            config["popularity_correction"] = float(popularity_correction)
        if new_items:
            config["rows"] = "new_items"
        teacher_excludes = self.teacher_excludes_history(teacher_dir)
        if teacher_excludes:  # only then: CC against a teacher ranking with its history kept keeps its keys
            config["cc"] = "history_excluded"
        inputs = {"model": StageCache.key_of(model_dir), "teacher": StageCache.key_of(teacher_dir),
                  "data": self.data_key}

        def build(tmp: Path) -> None:
            device = resolve_device(self.recipe.device)
            model = load_model(model_dir / "model", device=device)
            teacher = self.load_teacher(teacher_dir)
            bias = (popularity_bias(model.prefix_index(), self.popularity, popularity_correction)
                    if popularity_correction else None)
            examples = self.dataset.splits[split]
            if new_items:
                examples = new_item_rows(examples)
            metrics, ranks = evaluate(model, examples, teacher=teacher, protocol=self.protocol,
                                      num_beams=ev.num_beams, batch_size=ev.batch_size,
                                      max_rows=config["max_rows"], popularity=self.popularity,
                                      progress=self.progress, return_ranks=True, decode=ev.decode, bf16=ev.bf16,
                                      edge_bias=bias, teacher_exclude_history=teacher_excludes)
            write_json(tmp / "metrics.json", metrics)
            np.save(tmp / "ranks.npy", ranks.astype(np.int64))

        d = self._stage(f"eval-{split}", config, inputs, build)
        return read_json(d / "metrics.json"), np.load(d / "ranks.npy", allow_pickle=False)

    def reference_rows(self, seed: int, common: dict) -> tuple[list[ResultRow], np.ndarray]:
        """MostPop and Random on the test split (and their valid metric), scored like the models, and
        MostPop's test ranks (what every other row is compared with)."""
        from semrec.evaluation import ks_for, most_popular_lists, random_lists, score_lists

        ks, k = ks_for(self.protocol), 10
        n, scored = self.dataset.num_items, {}
        for name in BASELINES:
            for split in ("valid", "test"):
                ex = self.dataset.splits[split]
                if split == "test" and self.recipe.eval.max_test_rows is not None:
                    ex = ex.subset(np.arange(min(len(ex), self.recipe.eval.max_test_rows)))
                lists = (most_popular_lists(self.popularity, len(ex), k) if name == "MostPop"
                         else random_lists(n, len(ex), k, seed=seed))
                scored[name, split] = score_lists(lists, ex.targets, ks, num_items=n, popularity=self.popularity)
        base = scored["MostPop", "test"][1]
        rows = [ResultRow(name=name, model=name.lower(), tokenizer=None, loss="none", alpha=None, tau=None,
                          **common, seed=seed, metrics={**scored[name, "test"][0], "n_rows": len(base)},
                          valid_metric=scored[name, "valid"][0].get(self.recipe.eval.select_on),
                          vs_mostpop=_vs(scored[name, "test"][1], base)) for name in BASELINES]
        return rows, base

    def teacher_diagnostics(self, teacher_dir: Path) -> tuple[dict, np.ndarray]:
        """A teacher's top-10 list diagnostics on the test split and its test ranks within those lists (its
        lists leave the history out when it was scored that way)."""
        from semrec.cf.evaluate import teacher_top_lists
        from semrec.evaluation import ks_for, score_lists

        test = self.dataset.test
        if self.recipe.eval.max_test_rows is not None:
            test = test.subset(np.arange(min(len(test), self.recipe.eval.max_test_rows)))
        lists = teacher_top_lists(self.load_teacher(teacher_dir), test, 10,
                                  exclude_history=self.teacher_excludes_history(teacher_dir))
        metrics, ranks = score_lists(lists, test.targets, ks_for(self.protocol), num_items=self.dataset.num_items,
                                     popularity=self.popularity)
        return {k: metrics[k] for k in DIAGNOSTICS if k in metrics}, ranks

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

        r = self.recipe
        t_start = time.time()
        rows: list[ResultRow] = []
        device = resolve_device(r.device)
        common = {"dataset": self.dataset.name, "protocol": self.protocol, "split": "test", "device": str(device)}
        for seed in r.seeds:
            refs, base_ranks = self.reference_rows(seed, common)
            rows += refs
            teacher_dir = self.teacher(r.teacher.model, seed)
            for tname in dict.fromkeys([r.teacher.model, *r.teachers_in_table]):
                tdir = teacher_dir if tname == r.teacher.model else self.teacher(tname, seed)
                m = read_json(tdir / "metrics.json")
                diag, ranks = self.teacher_diagnostics(tdir)
                label = _teacher_label(tname) + (", history excluded" if self.teacher_excludes_history(tdir) else "")
                rows.append(ResultRow(name=label, model=tname, tokenizer=None, loss="ce", alpha=None,
                                      tau=None, **common, seed=seed, metrics={**m["test"], **diag},
                                      valid_metric=m["valid"].get(r.eval.select_on), vs_mostpop=_vs(ranks, base_ranks),
                                      wall_time_s=read_json(tdir / "stage.json")["seconds"]))
            tok_dirs: dict[str, Path] = {}
            for spec in r.models:
                scheme = spec.tokenizer or r.tokenizer
                if scheme not in tok_dirs:
                    tok_dirs[scheme] = self.tokenization(scheme)
                rows.append(self.model_row(spec, scheme, tok_dirs[scheme], teacher_dir, seed, base_ranks, common))
        new_items = [m.name for m in r.models if train_config(r, m, seed=r.seeds[0]).valid_rows == "new_items"]
        result = {
            "recipe": r.name, "dataset": self.dataset.name, "protocol": self.protocol, "seeds": r.seeds,
            "data": _data_spec(r.data),  # how to reload the dataset (semrec.serving)
            "commit": git_commit(), "machine": describe_machine(device),
            "wall_time_s": round(time.time() - t_start, 1),
            # what the results cost to compute, reused stages included (wall_time_s is this invocation only)
            "compute_time_s": round(sum(self.cache.used.values()), 1), "select_on": r.eval.select_on,
            "decode": r.eval.decode,
            **({"popularity_correction": r.eval.popularity_correction}
               if r.eval.popularity_correction != [0.0] else {}),
            **({"valid_new_items": new_items} if new_items else {}),
            "rows": [row.to_dict() for row in rows],
        }
        result["summary"] = summarize(result["rows"], table_metrics(self.protocol))
        if distributed.is_main():  # rank 0 alone writes the results
            write_json(self.out / "results.json", result)
            md = results_markdown(result)
            with atomic_file(self.out / "results.md") as f:
                f.write(md)
        distributed.barrier()
        return result

    def sweep_candidates(self, spec: ModelSpec, tok_dir: Path, teacher_dir: Path,
                         seed: int) -> list[tuple[float, dict, Path]]:
        """Train (or reuse) the model of every sweep value of one row and seed: [(best valid metric, sweep
        values, model stage)] in grid order (-inf where training recorded no valid metric)."""
        out = []
        for sweep in _grid(spec.sweep):
            mdir = self.model(spec, tok_dir, teacher_dir, seed, sweep)
            valid = read_json(mdir / "train.json")["best_valid"]
            out.append((valid if valid is not None else -math.inf, sweep, mdir))
        return out

    def sweep_mean_over_seeds(self, spec: ModelSpec, tok_dir: Path) -> dict:
        """`sweep_choice: mean_over_seeds`: the sweep values whose valid metric, averaged over every seed of
        the recipe, is best (the first in grid order on ties), as {"sweep", "valid" (that mean), "index" (its
        place in the grid), "candidates" ({seed: `sweep_candidates`})}. Trains (or reuses) every seed's teacher
        and sweep models the first time a seed of the row asks."""
        if spec.name not in self.choices_over_seeds:
            per_seed = {s: self.sweep_candidates(spec, tok_dir, self.teacher(self.recipe.teacher.model, s), s)
                        for s in self.recipe.seeds}
            means = np.mean([[c[0] for c in cands] for cands in per_seed.values()], axis=0)
            best = int(np.argmax(means))
            self.choices_over_seeds[spec.name] = {"sweep": _grid(spec.sweep)[best], "valid": float(means[best]),
                                                  "index": best, "candidates": per_seed}
        return self.choices_over_seeds[spec.name]

    def model_row(self, spec: ModelSpec, scheme: str, tok_dir: Path, teacher_dir: Path, seed: int,
                  base_ranks: np.ndarray, common: dict) -> ResultRow:
        """Train (or reuse) every sweep value of one model row, keep the best on valid (this seed's, or the
        mean over seeds: `ModelSpec.sweep_choice`), choose its decoding-time popularity correction on valid
        (when the recipe lists strengths), score it on test."""
        r = self.recipe
        over_seeds = None
        if spec.sweep_choice == "mean_over_seeds":  # every seed's candidates were gathered for the choice
            over_seeds = self.sweep_mean_over_seeds(spec, tok_dir)
            candidates = over_seeds["candidates"][seed]
            best_valid, sweep, mdir = candidates[over_seeds["index"]]
        else:
            candidates = self.sweep_candidates(spec, tok_dir, teacher_dir, seed)
            best_valid, sweep, mdir = max(candidates, key=lambda c: c[0])
        tcfg = train_config(r, spec, seed=seed, sweep_values=sweep)
        chosen, corrections = {}, None
        if r.eval.popularity_correction != [0.0]:  # on the valid rows training selected on
            corrections = [{"popularity_correction": s, "valid": self.split_metrics(
                mdir, teacher_dir, "valid", s, new_items=tcfg.valid_rows == "new_items")[0][r.eval.select_on]}
                for s in sorted(set(r.eval.popularity_correction))]
            best = max(corrections, key=lambda c: c["valid"])  # the first maximum: ties go to the smaller s
            best_valid, chosen = best["valid"], {"popularity_correction": best["popularity_correction"]}
        metrics, ranks = self.split_metrics(mdir, teacher_dir, "test", chosen.get("popularity_correction", 0.0))
        train_info = read_json(mdir / "train.json")
        return ResultRow(
            name=spec.name, model=spec.model, tokenizer=Path(scheme).stem,
            loss=tcfg.loss + ("+msl" if tcfg.msl else ""), alpha=tcfg.alpha if tcfg.loss == "tca" else None,
            tau=tcfg.tau, **common, seed=seed, metrics={k: v for k, v in metrics.items() if k != "wall_time_s"},
            baseline=baseline_of(r, spec), valid_metric=best_valid if math.isfinite(best_valid) else None,
            vs_mostpop=_vs(ranks, base_ranks),
            selected_on_valid=({**sweep, **chosen, r.eval.select_on: best_valid,
                                **({f"{r.eval.select_on} mean over seeds": over_seeds["valid"]} if over_seeds else {})}
                               if spec.sweep or chosen else None),
            sweep_valid=[{**c[1], "valid": c[0]} for c in candidates] if spec.sweep else None,
            correction_valid=corrections,
            train_wall_time_s=train_info["wall_time_s"], train_cpu_time_s=train_info.get("cpu_time_s"),
            train_steps=(train_info.get("history") or [{}])[-1].get("step"), epochs_run=train_info["epochs_run"],
            best_epoch=train_info["best_epoch"], eval_wall_time_s=metrics.get("wall_time_s"), model_stage=mdir.name)


def train_popularity(dataset) -> np.ndarray:
    """(N,) how often each item is a target in the training split: what MostPop recommends and what the
    popularity-bias figure measures against. Where the split holds one sequence per user (protocol P,
    leave-one-out and imported data) every item after a sequence's first counts; where it holds many
    fixed-length rows per user (protocol T) the rows' targets count, as each row's history repeats the
    targets of the rows before it."""
    from semrec.metrics import item_popularity

    train = dataset.train
    if len(np.unique(train.users)) == len(train):
        train = train.expand_prefixes(min_history=1)
    return item_popularity(train.targets, dataset.num_items)


def table_metrics(protocol: str) -> list[str]:
    return TABLE_METRICS.get(protocol, TABLE_METRICS["custom"]) + DIAGNOSTICS


def _vs(ranks: np.ndarray, base_ranks: np.ndarray) -> dict:
    from semrec.metrics import paired_gain

    gain, se = paired_gain(ranks, base_ranks, 10)
    return {"ndcg@10_gain": gain, "se": se}


# TrainConfig fields that only configure the CF signal: a TCA row and its NTP baseline may differ in these.
TCA_SETTINGS = ("loss", "alpha", "cf_temperature", "cf_top_k", "cf_exclude_history")


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


def _stage_key(cfg) -> dict:
    """A config dataclass as a stage key: its fields, less those listed in its `stage_key_omits` while they
    hold the default recorded there (options added after stages were cached leave those stages valid)."""
    omit = getattr(type(cfg), "stage_key_omits", {})
    return {k: v for k, v in dataclasses.asdict(cfg).items() if not (k in omit and v == omit[k])}


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
    """Mean and std (over seeds) of each metric and of the valid metric, per row name, in first-seen order;
    `above_mostpop`: whether the NDCG@10 gain over MostPop, pooled over seeds, exceeds two standard errors."""
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        entry = {"name": name, "n_seeds": len(group)}
        for m in [*metrics, "valid_metric"]:
            vals = [r[m] for r in group if r.get(m) is not None]
            if vals:
                entry[m] = float(np.mean(vals))
                entry[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        vs = [r["vs_mostpop"] for r in group if r.get("vs_mostpop")]
        if vs and name != "MostPop":
            gain = float(np.mean([v["ndcg@10_gain"] for v in vs]))
            se = float(np.sqrt(sum(v["se"] ** 2 for v in vs)) / len(vs))
            entry["above_mostpop"] = gain > 2 * se
        out.append(entry)
    return out


def format_cell(s: dict, m: str) -> str:
    """One summary entry's metric as a table cell: mean (± std over seeds), "-" when absent."""
    if m not in s:
        return "-"
    fmt = "{:.0f}" if m == "distinct_top1" else "{:.4f}"
    if s["n_seeds"] > 1:
        return f"{fmt.format(s[m])} ± {fmt.format(s[m + '_std'])}"
    return fmt.format(s[m])


def results_markdown(result: dict) -> str:
    metrics = table_metrics(result["protocol"])
    select = result.get("select_on", "ndcg@10")
    lines = [f"# {result['recipe']}: {result['dataset']} (protocol {result['protocol']}), test split",
             "", f"Seeds {result['seeds']}; commit `{result['commit']}`; {result['machine']}; "
             f"wall time {result['wall_time_s']} s" + (f" (all stages' compute time {result['compute_time_s']} s, "
                                                        "reused stages included)" if "compute_time_s" in result
                                                        else "") + ".", "",
             "| model | " + " | ".join(metrics) + f" | valid {select} |",
             "|---" * (len(metrics) + 2) + "|"]
    flagged = []
    for s in result["summary"]:
        name = s["name"]
        if s.get("above_mostpop") is False:
            name += " ⚑"
            flagged.append(s["name"])
        lines.append(f"| {name} | " + " | ".join(format_cell(s, m) for m in [*metrics, "valid_metric"]) + " |")
    if result.get("decode") == "exact":
        lines += ["", "Lists: each model's exact top-10 (every catalogue item scored by its log-probability), "
                  "not beam search."]
    if result.get("popularity_correction"):
        lines += ["", "Decoding: each model row's score of an item lowered by s x log of its training popularity "
                  f"share, s chosen per row and seed from {result['popularity_correction']} on the valid rows it "
                  f"selects on, by {select} (ties: the smaller s; values below); its valid column is at that s."]
    if result.get("valid_new_items"):
        lines += ["", "Validated on the valid split's new-item rows only (target not in the history: early stopping, "
                  f"sweeps and the valid column): {', '.join(result['valid_new_items'])}."]
    lines += ["", "coverage@10: share of the catalogue in any top-10 list; distinct_top1: distinct first items "
              "across rows; pop1%@10: share of top-10 slots taken by the 1% most popular items (by training-"
              "target count)."]
    if flagged:
        lines += ["", "⚑ not clearly above MostPop (NDCG@10 gain within two standard errors of the paired "
                  f"per-row difference): {', '.join(flagged)}."]
    budget = [r for r in result["rows"] if r.get("train_wall_time_s") is not None]
    if budget:
        lines += ["", "Budget per trained model (training includes its validation passes):", ""]
        lines += [f"- {r['name']} seed {r['seed']}: {r.get('epochs_run')} epochs (best {r.get('best_epoch')}), "
                  f"{r.get('train_steps')} steps, {r['train_wall_time_s']:.0f} s wall"
                  + (f", {r['train_cpu_time_s']:.0f} CPU s" if r.get("train_cpu_time_s") is not None else "")
                  for r in budget]
    sel = [r for r in result["rows"] if r.get("selected_on_valid")]
    if sel:
        lines += ["", "Values chosen on the valid split:", ""]
        lines += [f"- {r['name']} seed {r['seed']}: {r['selected_on_valid']}" for r in sel]
    return "\n".join(lines) + "\n"


def run_recipe(recipe: Recipe, out_dir: str | Path, **kwargs: Any) -> dict:
    """Run every stage of `recipe` into `out_dir` and return the results dict."""
    return Pipeline(recipe, out_dir, **kwargs).run()
