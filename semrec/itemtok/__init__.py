"""Item tokenizations: the `ItemTokenization` artifact (every item's token sequence in a generative
model's vocabulary), schemes (a YAML file -> an artifact, via the leaf algorithms in
`semrec.quantizers`), title tokens for LLM recommenders, and comparison reports across schemes."""

from semrec.itemtok.artifact import ItemTokenization
from semrec.itemtok.quality import code_usage
from semrec.itemtok.schemes import SchemeConfig, build_tokenization, load_scheme
from semrec.itemtok.titles import TitleConfig, title_tokenization, title_tokenization_for_llm

__all__ = ["ItemTokenization", "SchemeConfig", "TitleConfig", "build_tokenization", "code_usage", "load_scheme",
           "title_tokenization", "title_tokenization_for_llm"]
