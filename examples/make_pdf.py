"""Regenerate examples/notes/papers/mixture-of-experts.pdf.

The PDF is committed; this script only exists so it can be rebuilt.
It needs fpdf2 (``pip install fpdf2``), which is not a project dependency.
Only the built-in Helvetica font is used, so all text must be Latin-1.

Usage:  python examples/make_pdf.py
"""

from datetime import datetime, timezone
from pathlib import Path

from fpdf import FPDF

OUT = Path(__file__).resolve().parent / "notes" / "papers" / "mixture-of-experts.pdf"

TITLE = "Mixture of Experts: Routing and Load Balancing"
SUBTITLE = "Study notes - Sourcebook sample corpus"

# Each entry: ("h1" | "h2" | "p" | "bullets" | "table", content)
CONTENT = [
    ("h1", "1. Introduction"),
    ("p",
     "In a dense Transformer every token passes through every parameter, so the "
     "cost of a forward pass grows linearly with model size. A Mixture of Experts "
     "(MoE) layer breaks this link. It replaces the feed-forward network (FFN) of "
     "a Transformer block with E independent FFNs, called experts, plus a small "
     "router. Each token is sent to only k of the E experts, so the total number "
     "of parameters can grow while the compute per token stays roughly constant."),
    ("p",
     "The idea goes back to the adaptive mixtures of local experts of Jacobs et "
     "al. (1991). Shazeer et al. (2017) made it practical for large language "
     "models with a sparsely-gated MoE layer, and GShard (2020) and the Switch "
     "Transformer (2021) scaled it to hundreds or thousands of experts."),
    ("h1", "2. The Router"),
    ("p",
     "The router is a single linear layer. For a token representation x it "
     "computes one logit per expert, h = x W_r, and turns the logits into "
     "probabilities p = softmax(h). The token is dispatched to the k experts with "
     "the highest probabilities, and the layer output is the weighted sum of "
     "their outputs, y = sum over selected experts i of g_i(x) E_i(x). In Mixtral "
     "the gate values g_i are obtained by a softmax over the top-k logits only, "
     "so the selected weights always sum to one."),
    ("h2", "2.1 Choosing k"),
    ("bullets", [
        "Top-2 routing (GShard, Mixtral) gives every token a second opinion and "
        "trains stably.",
        "Top-1 routing (Switch Transformer) halves the expert compute and the "
        "communication volume, and the Switch paper found that quality holds up "
        "well when the number of experts is large.",
        "Fine-grained designs such as DeepSeek-V3 use many small experts and a "
        "larger k, activating 8 of 256 routed experts plus 1 shared expert.",
    ]),
    ("h1", "3. Load Balancing"),
    ("h2", "3.1 Why imbalance happens"),
    ("p",
     "Routing is self-reinforcing. An expert that receives more tokens early in "
     "training gets more gradient updates, becomes better, and is then chosen "
     "even more often by the router. Without a counter-measure the model can "
     "collapse to a few busy experts while the others stay idle, which wastes "
     "parameters and overloads the devices that host the popular experts."),
    ("h2", "3.2 Auxiliary load-balancing loss"),
    ("p",
     "The Switch Transformer adds an auxiliary loss to the training objective: "
     "loss_aux = alpha * N * sum_i (f_i * P_i), where N is the number of experts, "
     "f_i is the fraction of tokens in the batch dispatched to expert i, and P_i "
     "is the average router probability assigned to expert i. The loss reaches "
     "its minimum when both distributions are uniform, that is when every expert "
     "receives 1/N of the tokens. The Switch paper uses alpha = 0.01, which is "
     "large enough to balance the load but small enough not to hurt quality."),
    ("h2", "3.3 Expert capacity and token dropping"),
    ("p",
     "To keep tensor shapes static, each expert processes at most a fixed number "
     "of tokens per batch. The expert capacity is (tokens per batch / number of "
     "experts) multiplied by a capacity factor. Tokens routed to an expert that "
     "is already full are dropped: they skip the expert and pass to the next "
     "layer through the residual connection. A capacity factor between 1.0 and "
     "1.25 works well for training; larger values drop fewer tokens but waste "
     "memory and compute on padding."),
    ("h2", "3.4 Router z-loss and loss-free balancing"),
    ("p",
     "ST-MoE (Zoph et al., 2022) observed that large router logits cause "
     "numerical instability, especially in bfloat16. Its router z-loss penalizes "
     "the squared log-sum-exp of the router logits, with a coefficient of 0.001. "
     "DeepSeek-V3 goes further and removes the auxiliary loss altogether: it adds "
     "a bias to each expert's routing score, used only for top-k selection, and "
     "after each step lowers the bias of overloaded experts and raises the bias "
     "of underloaded ones."),
    ("h1", "4. Systems Aspects"),
    ("p",
     "In expert parallelism the experts of a layer are spread across devices. "
     "Every MoE layer then needs two all-to-all communications: one to dispatch "
     "tokens to the devices that hold their experts, and one to combine the "
     "results. Communication, not arithmetic, is often the bottleneck. Memory is "
     "the other cost: although only k experts run for each token, all experts "
     "must be kept in memory, so an MoE model needs as much memory as a dense "
     "model of the same total size."),
    ("h1", "5. Example Models"),
    ("table", [
        ("Model", "Experts per layer", "Active (top-k)", "Total params", "Active params"),
        ("Mixtral 8x7B", "8", "2", "46.7B", "12.9B"),
        ("DeepSeek-V3", "256 routed + 1 shared", "8 + 1", "671B", "37B"),
    ]),
    ("p",
     "Mixtral 8x7B is the easiest example to reason about. Each of its 32 layers "
     "has 8 experts and every token uses 2 of them, so the model has 46.7B "
     "parameters in total but only about 12.9B are active per token. Its "
     "inference cost is therefore close to that of a 13B dense model, while its "
     "memory footprint is that of a 47B model."),
    ("h1", "6. Summary"),
    ("bullets", [
        "MoE decouples parameter count from per-token compute.",
        "Without balancing, routing collapses onto a few experts.",
        "The auxiliary loss, capacity factor and router z-loss are the standard "
        "tools for keeping training stable and the load even.",
        "The price is memory for all experts and all-to-all communication.",
    ]),
]


class NotesPDF(FPDF):
    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.set_text_color(120)
        self.cell(0, 10, f"Page {self.page_no()}/{{nb}}", align="C")


def build(path: Path = OUT) -> Path:
    pdf = NotesPDF(format="A4")
    pdf.set_title(TITLE)
    pdf.set_author("Sourcebook examples")
    pdf.set_subject("Mixture of Experts routing and load balancing")
    pdf.set_creation_date(datetime(2024, 6, 1, tzinfo=timezone.utc))
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()

    pdf.set_font("Helvetica", "B", 17)
    pdf.multi_cell(0, 9, TITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "I", 10)
    pdf.set_text_color(90)
    pdf.cell(0, 6, SUBTITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.ln(3)

    for kind, content in CONTENT:
        if kind == "h1":
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 13)
            pdf.cell(0, 7, content, new_x="LMARGIN", new_y="NEXT")
        elif kind == "h2":
            pdf.set_font("Helvetica", "B", 11)
            pdf.cell(0, 6, content, new_x="LMARGIN", new_y="NEXT")
        elif kind == "p":
            pdf.set_font("Helvetica", "", 10)
            pdf.multi_cell(0, 5, content, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif kind == "bullets":
            pdf.set_font("Helvetica", "", 10)
            for item in content:
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(0, 5, "- " + item, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        elif kind == "table":
            pdf.set_font("Helvetica", "", 9)
            with pdf.table(text_align="LEFT", line_height=5.5) as table:
                for row in content:
                    r = table.row()
                    for value in row:
                        r.cell(value)
            pdf.ln(2)
        else:
            raise ValueError(kind)

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


if __name__ == "__main__":
    out = build()
    print(f"wrote {out} ({out.stat().st_size} bytes)")
