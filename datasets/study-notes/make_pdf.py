"""Generate notes/speculative-decoding.pdf from the text below, reproducibly.

    pip install fpdf2 && python datasets/study-notes/make_pdf.py

The PDF is committed; this script exists so that it can be rebuilt (and changed) from
text. The note is in English so the core Helvetica font suffices (no font file needed),
and the creation date is fixed so that the same text gives the same bytes.

After changing the text, run `python datasets/study-notes/build_questions.py`: gold line
numbers of PDF questions are lines of the text the converter extracts.
"""

# ruff: noqa: E501  (the note's text: one paragraph per line)
from __future__ import annotations

import datetime
from pathlib import Path

from fpdf import FPDF

OUTPUT = Path(__file__).resolve().parent / "notes" / "speculative-decoding.pdf"

# (style, text): "h1"/"h2" headings, "p" paragraphs, "li" bullet items, "code" lines
CONTENT: list[tuple[str, str]] = [
    ("h1", "Speculative decoding"),
    (
        "p",
        "Reading notes on Leviathan et al. (2023) and Chen et al. (2023), plus what I saw when trying it in vLLM.",
    ),
    ("h2", "The idea"),
    (
        "p",
        "Autoregressive decoding is memory-bound: each step reads all the weights to produce one token, and the GPU's arithmetic units sit mostly idle.",
    ),
    (
        "p",
        "Speculative decoding uses a small draft model to propose k tokens, then the large target model checks all k in a single forward pass.",
    ),
    (
        "p",
        "Verifying k tokens costs about as much as generating one, because the forward pass over k positions is still limited by reading the weights.",
    ),
    ("h2", "Acceptance rule"),
    (
        "p",
        "For each proposed token x, accept it with probability min(1, p(x) / q(x)), where p is the target distribution and q the draft distribution.",
    ),
    (
        "p",
        "If a token is rejected, sample a replacement from the normalised residual max(0, p - q) and discard the rest of the draft.",
    ),
    (
        "p",
        "This rejection sampling scheme makes the output distribution exactly the target model's distribution, so quality is unchanged; only speed differs.",
    ),
    (
        "p",
        "When all k tokens are accepted, the target model's forward pass also yields one extra token for free, so one round produces up to k + 1 tokens.",
    ),
    ("h2", "Expected speed-up"),
    (
        "p",
        "With acceptance rate alpha, the expected number of tokens per round is (1 - alpha^(k+1)) / (1 - alpha).",
    ),
    (
        "p",
        "Typical acceptance rates are 0.6 to 0.8 for a draft model from the same family; with k = 4 that gives roughly 2 to 3 tokens per target forward pass.",
    ),
    (
        "p",
        "Reported wall-clock speed-ups are 2x to 3x for T5-XXL and Chinchilla-sized models at batch size 1.",
    ),
    (
        "p",
        "Speed-ups shrink at large batch sizes, because the target model becomes compute-bound and the extra verification work is no longer free.",
    ),
    ("h2", "Variants"),
    (
        "li",
        "Medusa: extra decoding heads on the target model predict several future tokens, so no separate draft model is needed.",
    ),
    (
        "li",
        "EAGLE: a light draft head works on the target model's hidden features instead of tokens, which raises acceptance rates.",
    ),
    (
        "li",
        "Prompt lookup decoding: draft tokens are copied from n-grams of the prompt; it works well for summarisation and code editing.",
    ),
    (
        "li",
        "Self-speculative decoding: the draft is the target model itself with some layers skipped.",
    ),
    ("h2", "Choosing the draft model"),
    (
        "p",
        "The draft model must share the target's tokenizer, otherwise the proposed token ids mean nothing to the target.",
    ),
    (
        "p",
        "A draft about 10 to 20 times smaller than the target is a common choice, for example a 0.5B draft for a 7B target.",
    ),
    ("h2", "In vLLM"),
    (
        "code",
        "vllm serve Qwen/Qwen2-7B-Instruct --speculative-model Qwen/Qwen2-0.5B-Instruct --num-speculative-tokens 4",
    ),
    (
        "p",
        "Check the acceptance rate in the metrics; below about 0.5 speculative decoding can be slower than plain decoding.",
    ),
]


def build(output: Path = OUTPUT) -> None:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC))
    pdf.set_title("Speculative decoding")
    pdf.set_author("study notes")
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    styles = {
        "h1": ("Helvetica", "B", 18, 10),
        "h2": ("Helvetica", "B", 14, 8),
        "p": ("Helvetica", "", 11, 6),
        "li": ("Helvetica", "", 11, 6),
        "code": ("Courier", "", 9, 5),
    }
    for style, text in CONTENT:
        family, weight, size, height = styles[style]
        pdf.set_font(family, weight, size)
        if style in ("h1", "h2"):
            pdf.ln(3)
        body = f"- {text}" if style == "li" else text
        pdf.multi_cell(width, height, body, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    output.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(output))


if __name__ == "__main__":
    build()
    print(OUTPUT)
