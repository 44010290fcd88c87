"""One quick real crawl of the bundled site, shared by the tags, report and Datasette tests.

The crawl (about 10 s) runs once per test session; each test gets its own copy of the output folder,
since they change it (aliases, decisions, thumbnails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from catalog.store import Catalog
from mocksites.runner import REPO, LocalSite
from tests.conftest import crawl_command, crawl_env

HOSTILE = "<script>alert(1)</script>"
_done: dict[str, Path] = {}


def crawled_copy(site: LocalSite, tmp_path_factory: pytest.TempPathFactory, dest: Path) -> Path:
    """A copy, at ``dest``, of OUTPUT_DIR after ``scrapy crawl pixiv -a tag=原神 -a pages=1``."""
    if "output" not in _done:
        output = tmp_path_factory.mktemp("small-crawl") / "output"
        done = subprocess.run(crawl_command(site, output, "-a", "pages=1"), cwd=REPO, env=crawl_env(),
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        _done["output"] = output
    shutil.copytree(_done["output"], dest)
    return dest


def mark_some_dropped(output: Path) -> dict[str, int]:
    """Drop three crawled pictures as the decision stage would, give one a face and a hostile title."""
    cat = Catalog(output / "catalog.db")
    rows = cat.conn.execute(
        "SELECT artwork_id, page, path FROM images WHERE status = 'kept' AND path LIKE '%.jpg' ORDER BY artwork_id LIMIT 4"
    ).fetchall()
    with cat.batch():
        for n, (artwork_id, page, path) in enumerate(rows[:3]):
            moved = f"dropped/{Path(path).name}"
            (output / "dropped").mkdir(exist_ok=True)
            os.replace(output / path, output / moved)
            cat.set_decision(artwork_id, page, "dropped", f"drop: classifier mona 0.{n}00 < 0.2 (clf) (rule 2)", moved)
        artwork_id, page, _ = rows[3]
        cat.conn.execute("UPDATE artworks SET title = ? WHERE id = ?", [HOSTILE, artwork_id])
        crop = f"faces/{artwork_id}_p{page}_f0.jpg"
        (output / "faces").mkdir(exist_ok=True)
        Image.new("RGB", (96, 96), (230, 180, 150)).save(output / crop)
        cat.replace_faces(artwork_id, page, [{"index": 0, "x": 0, "y": 0, "w": 20, "h": 20, "path": crop}])
    counts = dict(cat.conn.execute("SELECT status, count(*) FROM images GROUP BY status"))
    cat.close()
    return counts
