"""The commit every run and report carries: ``-dirty`` only when code differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imr_outcome.train.tracking import git_commit


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "experiments" / "reports").mkdir(parents=True)
    (tmp_path / "model" / "ood.py").write_text("THRESHOLD = 0.99\n")
    (tmp_path / "experiments" / "reports" / "tfidf_lr.json").write_text("{}\n")
    (tmp_path / "experiments" / "tfidf_lr.yaml").write_text("model: {c: 0.1}\n")
    (tmp_path / "README.md").write_text("# readme\n")
    (tmp_path / "experiments" / "cv_table.py").write_text("TABLE = 1\n")
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "api.py").write_text("PORT = 8000\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path / "model")  # from a subfolder too
    return tmp_path


def test_reports_docs_table_script_and_serving_keep_the_commit_clean(repo: Path) -> None:
    (repo / "experiments" / "reports" / "tfidf_lr.json").write_text('{"auroc": 0.67}\n')
    (repo / "README.md").write_text("# readme, with the table\n")
    (repo / "experiments" / "cv_table.py").write_text("TABLE = 2\n")
    (repo / "serve" / "api.py").write_text("PORT = 8080\n")
    commit = git_commit()
    assert len(commit) == 40 and not commit.endswith("-dirty")


@pytest.mark.parametrize("path", ["model/ood.py", "experiments/tfidf_lr.yaml"])
def test_changed_code_or_config_marks_the_commit_dirty(repo: Path, path: str) -> None:
    (repo / path).write_text((repo / path).read_text() + "# changed\n")
    assert git_commit().endswith("-dirty")
