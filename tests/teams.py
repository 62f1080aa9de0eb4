"""A shared knowledge base for the access-control tests: the sample notes plus a Chinese
HR note readable only by group "hr" and an English finance note readable only by group
"finance" (both by access rule), and three users: an admin, alice (hr) and bob (no group).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kb_copy import copy_knowledge_base
from sourcebook import KnowledgeBase, Settings

NOTES = Path(__file__).resolve().parents[1] / "examples" / "notes"

HR_NOTE = """# 薪资制度（内部）

## 年终奖

2024 年的年终奖系数是 2.7 倍月薪，由人力资源部在一月发放。
预算见 [[budget]]。
"""
FINANCE_NOTE = """# Budget 2025 (confidential)

## Marketing

The Q3 marketing budget is 48,000 euros under the codename BLUEHERON.
"""
HR_QUESTION = "2024 年的年终奖系数是多少？"
FINANCE_QUESTION = "How large is the Q3 marketing budget?"
# what must never reach a reader outside the group: title words and facts
HR_SECRETS = ("薪资制度", "2.7 倍")
FINANCE_SECRETS = ("BLUEHERON", "48,000")


@dataclass
class Team:
    kb: KnowledgeBase
    notes: Path
    keys: dict[str, str]  # user name -> API key

    @property
    def hr_path(self) -> str:
        return str(self.notes / "hr" / "salary.md")

    @property
    def finance_path(self) -> str:
        return str(self.notes / "finance" / "budget.md")


def build_team(base: Path, notes_kb: KnowledgeBase) -> Team:
    """A private copy of the session knowledge base with the restricted notes added.
    The rules are set before the notes are indexed: they apply at ingest."""
    notes = base / "notes"
    shutil.copytree(NOTES, notes)
    (notes / "hr").mkdir()
    (notes / "hr" / "salary.md").write_text(HR_NOTE, encoding="utf-8")
    (notes / "finance").mkdir()
    (notes / "finance" / "budget.md").write_text(FINANCE_NOTE, encoding="utf-8")
    copy_knowledge_base(notes_kb.path, base / "kb")
    kb = KnowledgeBase(base / "kb", Settings(kb=base / "kb"))
    for source in kb.status().sources:
        kb.remove([source])
    kb.set_access_rule("hr/*", ["hr"])
    kb.set_access_rule("finance/*", ["finance"])
    report = kb.add([notes])
    assert not report.failed and report.added == 22
    kb.access.add_user("root", admin=True)
    kb.access.add_user("alice", groups=["hr"])
    kb.access.add_user("bob")
    keys = {name: kb.access.create_key(name)[1] for name in ("root", "alice", "bob")}
    return Team(kb, notes, keys)
