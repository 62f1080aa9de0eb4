"""Memory and throughput of ingesting big documents.

    python benchmarks/big_files.py pdf --pages 1000      # peak RSS of `sourcebook add`
    python benchmarks/big_files.py throughput             # pages/s, text layer and OCR
    python benchmarks/big_files.py csv --mb 200           # peak RSS of `add --no-wait`

`pdf` writes a PDF of N pages (two columns of text, a ruled table every tenth page, a
running header and page numbers) with fpdf2, then runs `sourcebook add` on it in a fresh
knowledge base and samples the resident memory of the whole process tree (the CLI and its
conversion worker) every 50 ms; the figure quoted is the peak of the sum.
`throughput` times the converter alone on text-layer pages and on scanned pages (OCR).
`csv` writes a CSV of about N MB (Chinese and English cells), runs `sourcebook add
--no-wait` on it (every row keyword-searchable; embedding is left to `sync`) with the
given rows per part, samples memory the same way, then checks that a row of the file's
end is found and that the knowledge base is consistent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from documents import new_pdf, running_page, scanned_pdf, text_image  # noqa: E402
from sourcebook.ingest.converters import convert  # noqa: E402

LEFT = "第{n}页左栏：量化把权重从 fp16 压缩到 int4，显存占用降到四分之一，推理速度提升。"
RIGHT = "Page {n}, right column: speculative decoding drafts tokens with a small model. "


def big_pdf(path: Path, pages: int) -> Path:
    pdf = new_pdf()
    for n in range(1, pages + 1):
        running_page(pdf, n)
        pdf.set_font("cjk", "B", size=14)
        pdf.set_xy(40, 50)
        pdf.cell(400, 18, f"第 {n} 节 Section {n}")
        pdf.set_font("cjk", size=10)
        pdf.set_xy(40, 80)
        pdf.multi_cell(240, 14, LEFT.format(n=n) * 8)
        pdf.set_xy(310, 80)
        pdf.multi_cell(240, 14, RIGHT.format(n=n) * 8)
        if n % 10 == 0:
            pdf.set_xy(40, 500)
            with pdf.table(width=400) as table:
                for row in (("指标 Metric", "数值 Value"), (f"latency p{n}", f"{n} ms")):
                    cells = table.row()
                    for value in row:
                        cells.cell(value)
    pdf.output(str(path))
    return path


def peak_rss(command: list[str]) -> tuple[float, float, int]:
    """(peak MB of the process tree, seconds, exit code)."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    return peak / 2**20, time.perf_counter() - started, process.returncode


def run_pdf(pages: int, model: str, existing: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        path = existing or big_pdf(folder / "big.pdf", pages)
        made = time.perf_counter() - start
        print(f"{pages} pages ({path.stat().st_size / 2**20:.1f} MB) ready in {made:.0f} s")
        cli = [sys.executable, "-m", "sourcebook.surfaces.cli"]
        kb = str(folder / "kb")
        subprocess.run([*cli, "init", "--kb", kb, "--model", model], check=True)
        peak, seconds, code = peak_rss([*cli, "add", str(path), "--kb", kb])
        print(f"sourcebook add: exit {code}, {seconds:.0f} s, peak RSS {peak:.0f} MB ({model})")


def run_throughput(pages: int, scanned: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text_pdf = big_pdf(folder / "text.pdf", pages)
        start, cpu = time.perf_counter(), time.process_time()
        convert(text_pdf, text_pdf.read_bytes())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"text layer: {pages} pages in {seconds:.1f} s = {pages / seconds:.1f} pages/s "
            f"(CPU {cpu:.1f} s = {pages / cpu:.1f} pages per CPU second)"
        )
        lines = ["知识蒸馏让小模型学习大模型的输出分布，温度通常取二到四。"] * 12
        lines += ["Speculative decoding drafts tokens with a small model."] * 12
        convert(Path("warm.png"), text_image(["预热 warm up"]))  # load the OCR models
        total = cpu_total = 0.0
        for i in range(scanned):
            scan = scanned_pdf(folder / f"scan{i}.pdf", lines)
            start, cpu = time.perf_counter(), time.process_time()
            convert(scan, scan.read_bytes())
            total += time.perf_counter() - start
            cpu_total += time.process_time() - cpu
        print(
            f"OCR: {scanned} scanned pages ({len(lines)} lines each) in {total:.1f} s = "
            f"{total / scanned:.1f} s per page (CPU {cpu_total / scanned:.1f} s per page)"
        )


def big_csv(path: Path, megabytes: float) -> int:
    """A CSV of about `megabytes` MB; the number of data rows."""
    goods = ["显卡 GPU", "内存条 RAM", "固态硬盘 SSD", "主板 motherboard", "电源 power supply"]
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("编号 code,商品 item,说明 note,价格 price,日期 date\n")
        while out.tell() < megabytes * 2**20:
            out.write(
                f"sku{rows:08d},{goods[rows % 5]} 第{rows}号,"
                f'"库存 {rows % 97} 件, shipped from warehouse {rows % 13}",'
                f"{100 + rows % 5000}.{rows % 100:02d},"
                f"2026-{1 + rows % 12:02d}-{1 + rows % 28:02d}\n"
            )
            rows += 1
    return rows


def run_csv(megabytes: float, part_rows: int) -> None:
    import os

    from sourcebook import KnowledgeBase, Settings

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "big.csv"
        rows = big_csv(path, megabytes)
        print(f"{rows:,} rows ({path.stat().st_size / 2**20:.0f} MB)")
        cli = [sys.executable, "-m", "sourcebook.surfaces.cli"]
        kb = folder / "kb"
        subprocess.run([*cli, "init", "--kb", str(kb)], check=True)
        os.environ["SOURCEBOOK_CSV_PART_ROWS"] = str(part_rows)
        peak, seconds, code = peak_rss([*cli, "add", str(path), "--no-wait", "--kb", str(kb)])
        print(
            f"sourcebook add --no-wait (parts of {part_rows:,} rows): exit {code}, "
            f"{seconds:.0f} s, peak RSS {peak:.0f} MB"
        )
        with KnowledgeBase(kb, Settings(kb=kb)) as base:
            status = base.status()
            hits = base.search(f"sku{rows - 1:08d}", limit=1)
            cited = f"lines {hits[0].line_start}-{hits[0].line_end}" if hits else "not found"
            print(
                f"{status.documents} document, {status.chunks:,} chunks; the last row (file "
                f"line {rows + 1}): {cited}; consistency problems: "
                f"{base.store.consistency_problems() or 'none'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("pdf", "throughput", "csv"))
    parser.add_argument("--mb", type=float, default=200, help="size of the CSV")
    parser.add_argument("--part-rows", type=int, default=10_000, help="CSV rows per part")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--scanned", type=int, default=5)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--pdf", type=Path, help="a PDF made before (skips writing one)")
    args = parser.parse_args()
    if args.what == "pdf":
        run_pdf(args.pages, args.model, args.pdf)
    elif args.what == "csv":
        run_csv(args.mb, args.part_rows)
    else:
        run_throughput(args.pages, args.scanned)


if __name__ == "__main__":
    main()
