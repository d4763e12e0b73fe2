"""Serve a finished `semrec run`: top-K recommendations for item histories, batched.

    rec = Recommender.from_run("runs/quickstart")            # best generative row on test
    rec.recommend([["Post-it Notes, 3x3", 1042], [7, 8]], top_k=10)
    # -> [[{"item_id": 311, "raw_id": "B00006IFHD", "title": "...", "score": -2.31}, ...], ...]

History entries are item ids (ints, or strings of digits), raw ids, or titles. Titles match exactly
(case, spacing and HTML entities ignored), then as the whole title typed without its punctuation (the
same words in the same order), then by words (every word of the query in the title), then by difflib
similarity; an earlier tier always wins, so a user who types a whole title gets that item even when
longer titles contain it. Several candidates in one tier (items sharing a title, or a partial title
matching many) or none give a SemrecError naming them. Scores are the beam search's
sums of token log-probabilities (higher is better), decoded with the trie constraint so every result is
a catalogue item. Users are anonymous (user id 0 for models with a hashed user token).
"""

from __future__ import annotations

import difflib
import html
import re
from pathlib import Path
from typing import Any

from semrec.artifacts import read_json
from semrec.errors import SemrecError
from semrec.pipeline.results import RESULTS_FILE, ResultRow, RunDirectory

_WORD = re.compile(r"[0-9a-z]+")


def normalize_title(s: str) -> str:
    """Case-folded, HTML-unescaped, whitespace-collapsed title (the key of exact matching)."""
    return " ".join(html.unescape(str(s)).casefold().split())


def _words(s: str) -> set[str]:
    return set(_WORD.findall(s.casefold()))


class ItemResolver:
    """Maps history entries (item id, raw id or title) to item ids 0..N-1 of a catalogue."""

    def __init__(self, raw_ids: list[str], titles: list[str | None], *, max_candidates: int = 8):
        self.raw_ids = [str(r) for r in raw_ids]
        self.titles = titles
        self.n = len(raw_ids)
        self.max_candidates = max_candidates
        self._by_raw = {r: i for i, r in enumerate(self.raw_ids)}
        self._by_title: dict[str, list[int]] = {}
        for i, t in enumerate(titles):
            if t:
                self._by_title.setdefault(normalize_title(t), []).append(i)
        self._norm = list(self._by_title)
        self._word_sets = [_words(t) for t in self._norm]
        self._by_word_seq: dict[tuple[str, ...], list[int]] = {}
        for t, ids in self._by_title.items():
            self._by_word_seq.setdefault(tuple(_WORD.findall(t)), []).extend(ids)

    def _describe(self, ids: list[int]) -> str:
        shown = "; ".join(f"{i} ({self.titles[i]!r})" for i in ids[: self.max_candidates])
        more = f"; ... {len(ids) - self.max_candidates} more" if len(ids) > self.max_candidates else ""
        return shown + more

    def resolve(self, entry: Any) -> int:
        """One history entry -> item id; SemrecError when unknown or ambiguous."""
        if isinstance(entry, bool):
            raise SemrecError(f"history entry {entry!r}: not an item id or title")
        if isinstance(entry, int) or (hasattr(entry, "dtype") and getattr(entry, "ndim", 1) == 0):
            i = int(entry)
            if not 0 <= i < self.n:
                raise SemrecError(f"unknown item id {i}: ids are 0..{self.n - 1}")
            return i
        if not isinstance(entry, str):
            raise SemrecError(f"history entry {entry!r}: expected an item id (int) or a title (str)")
        text = entry.strip()
        if not text:
            raise SemrecError("empty history entry: give an item id or a title")
        if text.isdigit():
            return self.resolve(int(text))
        if text in self._by_raw:
            return self._by_raw[text]
        key = normalize_title(text)
        exact = self._by_title.get(key)
        if exact is not None:
            if len(exact) > 1:
                raise SemrecError(f"title {text!r} is ambiguous: {len(exact)} items share it: "
                                  f"{self._describe(exact)}; give an item id instead")
            return exact[0]
        same_words = self._by_word_seq.get(tuple(_WORD.findall(key)))
        if same_words:
            if len(same_words) > 1:
                ids = sorted(same_words)
                raise SemrecError(f"title {text!r} is ambiguous: {len(ids)} items have these words in this order: "
                                  f"{self._describe(ids)}; give the exact title or an item id")
            return same_words[0]
        return self._fuzzy(text, key)

    def _fuzzy(self, text: str, key: str) -> int:
        q = _words(key)
        if q:
            hits = [j for j, ws in enumerate(self._word_sets) if q <= ws]
            if len(hits) == 1:
                return self._by_title[self._norm[hits[0]]][0]
            if hits:
                ids = sorted(i for j in hits for i in self._by_title[self._norm[j]])
                raise SemrecError(f"title {text!r} is ambiguous: {len(ids)} items match: {self._describe(ids)}; "
                                  f"give a longer title or an item id")
        close = difflib.get_close_matches(key, self._norm, n=self.max_candidates, cutoff=0.75)
        if not close:
            raise SemrecError(f"unknown item {text!r}: no item id, raw id or title matches")
        best = difflib.SequenceMatcher(None, key, close[0]).ratio()
        runner = difflib.SequenceMatcher(None, key, close[1]).ratio() if len(close) > 1 else 0.0
        if len(close) == 1 or best - runner >= 0.05:
            ids = self._by_title[close[0]]
            if len(ids) == 1:
                return ids[0]
        ids = sorted(i for t in close for i in self._by_title[t])
        raise SemrecError(f"title {text!r} is ambiguous: close to {self._describe(ids)}; "
                          f"give the exact title or an item id")

    def resolve_history(self, history: list[Any], position: int | None = None) -> list[int]:
        where = "" if position is None else f"history {position}: "
        if isinstance(history, (str, int)) or not hasattr(history, "__len__"):
            raise SemrecError(f"{where}expected a list of items, got {type(history).__name__}")
        if len(history) == 0:
            raise SemrecError(f"{where}empty history: give at least one item id or title")
        try:
            return [self.resolve(e) for e in history]
        except SemrecError as e:
            raise SemrecError(f"{where}{e}") from None


def pick_row(run: RunDirectory, name: str | None) -> ResultRow:
    """The results row to serve: `name` (its first seed), else the best mean test NDCG@10 generative row."""
    where = str(run.path / RESULTS_FILE)
    rows = run.generative_rows
    if not rows:
        raise SemrecError(f"{where}: the run has no generative model rows")
    names = list(dict.fromkeys(r.name for r in rows))
    if name is None:
        means = {n: sum(r.metrics.get("ndcg@10") or 0.0 for r in rows if r.name == n)
                 / sum(1 for r in rows if r.name == n) for n in names}
        name = max(names, key=lambda n: means[n])  # first-listed on ties
    if name not in names:
        hint = difflib.get_close_matches(name, names, n=1)
        raise SemrecError(f"{where}: no model row {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; rows: {', '.join(names)}")
    return min((r for r in rows if r.name == name), key=lambda r: r.seed or 0)


class Recommender:
    """A trained generative model with its catalogue; `recommend` is batched beam search.

    popularity_correction: s >= 0 lowers every item's score by s x log of its add-one smoothed training
    popularity share (`semrec.decoding.popularity_bias`; 0: the model's own ranking). Choose it on valid
    (a recipe's `eval.popularity_correction`, which `from_run` then applies)."""

    def __init__(self, model, dataset, *, name: str = "", num_beams: int | None = None, batch_size: int = 64,
                 popularity_correction: float = 0.0):
        if not popularity_correction >= 0:  # NaN too
            raise SemrecError(f"popularity_correction must be >= 0, got {popularity_correction!r}")
        self.model = model.eval()
        self.dataset = dataset
        self.name = name
        self.num_beams = num_beams
        self.batch_size = batch_size
        n_model = int(model.codes.shape[0])
        if n_model != dataset.num_items:
            raise SemrecError(f"model {name!r} covers {n_model} items but dataset {dataset.name} has "
                              f"{dataset.num_items}")
        self.titles = dataset.titles
        self.raw_ids = [str(r) for r in dataset.items["raw_id"].tolist()]
        self.resolver = ItemResolver(self.raw_ids, self.titles)
        self.edge_bias = None
        if popularity_correction:
            from semrec.decoding import popularity_bias
            from semrec.pipeline.run import train_popularity

            self.edge_bias = popularity_bias(model.prefix_index(), train_popularity(dataset), popularity_correction)

    @classmethod
    def from_run(cls, run_dir: str | Path, model: str | None = None, device: str = "auto",
                 **kwargs: Any) -> "Recommender":
        """Load row `model` (e.g. "TIGER+TCA"; default the best test NDCG@10) of a `semrec run` directory.
        Unless `popularity_correction` is given, it decodes with the strength that row chose on valid (the
        recipe's `eval.popularity_correction`; 0 when the recipe had none)."""
        from semrec.data import resolve_dataset
        from semrec.models import load_model
        from semrec.pipeline.cache import StageCache
        from semrec.pipeline.run import dataset_fingerprint
        from semrec.runtime import resolve_device

        run = RunDirectory(run_dir)
        row = pick_row(run, model)
        stage = run.model_stage(row)
        spec = run.result.get("data") or run.result.get("dataset")
        if not spec:
            raise SemrecError(f"{run.path / RESULTS_FILE}: no dataset recorded")
        try:
            dataset = resolve_dataset(spec)
        except SemrecError as e:
            raise SemrecError(f"{run.path / RESULTS_FILE}: cannot reload the run's dataset {spec!r}: {e}") from None
        want = read_json(stage / "stage.json").get("inputs", {}).get("data")
        if want is not None and dataset_fingerprint(dataset) != want:
            raise SemrecError(f"{run.path}: dataset {spec!r} has changed since the model was trained "
                              f"(fingerprint {dataset_fingerprint(dataset)}, run used {want})")
        net = load_model(stage / "model", device=resolve_device(device))
        StageCache.verify(stage)  # after loading, whose errors are more specific: catches same-size edits too
        if kwargs.get("popularity_correction") is None:
            kwargs["popularity_correction"] = float((row.selected_on_valid or {}).get("popularity_correction", 0.0))
        return cls(net, dataset, name=row.name, **kwargs)

    def resolve(self, histories: list[list[int | str]]) -> list[list[int]]:
        """Histories of ids / raw ids / titles -> item ids (SemrecError naming the bad entry)."""
        if isinstance(histories, (str, bytes)) or not hasattr(histories, "__len__"):
            raise SemrecError("histories: expected a list of histories (lists of item ids or titles)")
        if len(histories) == 0:
            raise SemrecError("histories: no history given")
        return [self.resolver.resolve_history(h, i if len(histories) > 1 else None) for i, h in enumerate(histories)]

    def example_table(self, ids: list[list[int]]):
        """Item-id histories -> an ExampleTable (last `max_history` items, left-padded; user 0, no target)."""
        import torch

        from semrec.data.examples import ExampleTable

        h = self.model.max_history
        hist = torch.full((len(ids), h), -1, dtype=torch.long)
        for r, items in enumerate(ids):
            tail = items[-h:]
            hist[r, h - len(tail):] = torch.tensor(tail, dtype=torch.long)
        n = len(ids)
        return ExampleTable(hist, torch.zeros(n, dtype=torch.long), torch.full((n,), -1, dtype=torch.long))

    def recommend(self, histories: list[list[int | str]], top_k: int = 10) -> list[list[dict]]:
        """Top-`top_k` items per history, best first: dicts {item_id, raw_id, title, score} (the beam score:
        log P(item | history), less the popularity correction when one is set)."""
        from semrec.decoding import beam_search

        if not isinstance(top_k, int) or top_k < 1:
            raise SemrecError(f"top_k must be a positive integer, got {top_k!r}")
        table = self.example_table(self.resolve(histories))
        beams = max(top_k, self.num_beams or top_k)
        info = getattr(self.model, "training_info", {}) or {}
        out: list[list[dict]] = []
        for rows in table.batches(self.batch_size):
            batch = self.model.collate(table, rows, with_targets=False).to(self.model.device)
            res = beam_search(self.model, batch, num_beams=beams, top_k=top_k,
                              renormalize=bool(info.get("msl", False)), temperature=float(info.get("tau") or 1.0),
                              edge_bias=self.edge_bias)
            items, scores = res.items.cpu().tolist(), res.scores.cpu().tolist()
            for its, scs in zip(items, scores):
                out.append([{"item_id": i, "raw_id": self.raw_ids[i], "title": self.titles[i], "score": float(s)}
                            for i, s in zip(its, scs) if i >= 0 and s != float("-inf")])
        return out
