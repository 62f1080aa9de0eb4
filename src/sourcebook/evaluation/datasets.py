"""Evaluation datasets: BEIR-style (corpus / queries / qrels) and SQuAD-style loaders, and
the two built-in named datasets (Cranfield, CMRC 2018 dev)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalDocument:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class EvalQuery:
    id: str
    text: str
    relevant: dict[str, int]  # document id -> gain (higher is more relevant)
    answers: tuple[str, ...] = ()  # gold answer strings, for SQuAD-style data


@dataclass
class EvalDataset:
    name: str
    documents: list[EvalDocument]
    queries: list[EvalQuery]
    graded: bool = False
    notes: list[str] = field(default_factory=list)

    def split(self, part: str) -> list[EvalQuery]:
        """'tune' or 'test': a fixed half of the queries, by a hash of the split key.

        SQuAD-style questions are split by document, so that no paragraph contributes to
        both halves; choices are made on 'tune' only and reported on 'test'.
        """
        if part == "all":
            return list(self.queries)
        want = 0 if part == "tune" else 1
        return [q for q in self.queries if _bucket(self._split_key(q)) == want]

    def _split_key(self, query: EvalQuery) -> str:
        return next(iter(query.relevant)) if query.answers else query.id


def _bucket(key: str) -> int:
    return hashlib.blake2b(key.encode(), digest_size=2).digest()[0] % 2


def data_root() -> Path:
    """Where the built-in datasets live: $SOURCEBOOK_DATA, else ../shared/data."""
    configured = os.environ.get("SOURCEBOOK_DATA")
    if configured:
        return Path(configured)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path("../shared/data")


def load_named(name: str) -> EvalDataset:
    root = data_root()
    if name == "cranfield":
        return load_cranfield(root / "cranfield")
    if name in ("cmrc2018", "cmrc"):
        return load_squad(root / "cmrc2018" / "cmrc2018_dev.json", name="cmrc2018")
    path = Path(name)
    if path.is_dir():
        return load_beir(path)
    if path.suffix == ".json":
        return load_squad(path)
    raise ValueError(
        f"unknown dataset {name!r}: use cranfield, cmrc2018, study-notes, a BEIR folder "
        "(corpus.jsonl, queries.jsonl, qrels/test.tsv) or a SQuAD-style .json file"
    )


def load_cranfield(folder: Path) -> EvalDataset:
    """Cranfield 1400. Grades 1 (complete answer) .. 4 (minimum interest) become gains
    4..1; qrel query ids are positions 1..225 in cran.qry, not its .I numbers."""
    raw = (folder / "cran.all.1400").read_text(encoding="latin-1")
    documents = []
    for match in re.finditer(r"^\.I (\d+)\n(.*?)(?=^\.I |\Z)", raw, re.S | re.M):
        fields = dict(re.findall(r"^\.([TAWB])\n(.*?)(?=^\.[TAWB]\n|\Z)", match[2], re.S | re.M))
        title = " ".join(fields.get("T", "").split())
        text = " ".join(fields.get("W", "").split())
        documents.append(EvalDocument(match[1], title, text))
    queries_raw = (folder / "cran.qry").read_text(encoding="latin-1")
    texts = [
        " ".join(m[1].split())
        for m in re.finditer(r"^\.W\n(.*?)(?=^\.I |\Z)", queries_raw, re.S | re.M)
    ]
    relevant: dict[int, dict[str, int]] = {}
    for line in (folder / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and 1 <= int(parts[2]) <= 4:
            relevant.setdefault(int(parts[0]), {})[parts[1]] = 5 - int(parts[2])
    queries = [
        EvalQuery(str(i), text, relevant[i])
        for i, text in enumerate(texts, start=1)
        if i in relevant
    ]
    return EvalDataset("cranfield", documents, queries, graded=True)


def load_squad(path: Path, name: str | None = None) -> EvalDataset:
    """SQuAD-format reading comprehension: each paragraph is a document, each question's
    relevant document is its own paragraph, its answers are the gold spans."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    documents, queries = [], []
    for article_index, article in enumerate(data):
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{article_index}-{paragraph_index}"
            documents.append(EvalDocument(doc_id, article.get("title", ""), paragraph["context"]))
            for qa in paragraph["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"] if a["text"]))
                if answers:
                    queries.append(EvalQuery(str(qa["id"]), qa["question"], {doc_id: 1}, answers))
    return EvalDataset(name or path.stem, documents, queries)


def load_beir(folder: Path, split: str = "test") -> EvalDataset:
    def read_jsonl(path: Path) -> list[dict[str, str]]:
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    documents = [
        EvalDocument(str(d["_id"]), d.get("title", ""), d["text"])
        for d in read_jsonl(folder / "corpus.jsonl")
    ]
    texts = {str(q["_id"]): q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    relevant: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = [EvalQuery(qid, texts[qid], rel) for qid, rel in relevant.items() if qid in texts]
    graded = any(g > 1 for q in queries for g in q.relevant.values())
    return EvalDataset(folder.name, documents, queries, graded=graded)
