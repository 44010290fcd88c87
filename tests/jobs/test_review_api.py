"""The review page's JSON API (GET /api/queue, POST /api/decide, GET /api/model) on a real server over
a crawled catalogue: the queue's orders and filters, the token and lock rules, and bad input."""

from __future__ import annotations

import json
import sqlite3

import requests

from catalog.tags import pictures_with
from core.output_lock import OutputLock
from models.classifier import model_version
from tests.crawler.small_crawl import crawled_copy
from tests.jobs.test_review import kept_ids, start_review, status_of

SCORES = (0.9, 0.55, 0.3, 0.48, 0.05)


def test_the_queue_its_orders_filters_and_bad_input(pixiv_site, tmp_path_factory, tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    scored = kept_ids(output)[:len(SCORES)]
    with sqlite3.connect(output / "catalog.db") as conn:
        conn.executemany("UPDATE images SET classifier_score = ?, classifier_model = 'classifier-test' "
                         "WHERE artwork_id = ? AND page = 0", zip(SCORES, scored))
        [failed] = conn.execute("SELECT artwork_id, page FROM images WHERE status = 'failed' LIMIT 1").fetchall()
        [(tag,)] = conn.execute("SELECT tag FROM artwork_tags WHERE artwork_id = ? LIMIT 1", [scored[0]]).fetchall()
        tagged = {(t.artwork_id, t.page) for t in pictures_with(conn, tag, ("kept", "dropped", "failed"))}
        total = conn.execute("SELECT count(*) FROM images").fetchone()[0]
    server, url = start_review(output)
    try:
        def queue(**params):
            answer = requests.get(url + "api/queue", params=params, timeout=30)
            assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json"), answer.text
            return answer.json()

        first = queue(order="uncertain", n=3)
        assert first["threshold"] == 0.5 and first["model"] is None  # no classifier configured
        assert [p["artwork_id"] for p in first["pictures"]] == [scored[3], scored[1], scored[2]]  # 0.48, 0.55, 0.3
        top = first["pictures"][0]
        assert top["scores"]["classifier"] == 0.48 and top["scores"]["distance_to_threshold"] == 0.02
        assert top["manual"] is None and top["status"] == "kept"
        thumbnail = requests.get(url + top["thumbnail"].lstrip("/"), timeout=30)
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        full = requests.get(url + top["picture"].lstrip("/"), timeout=30)
        assert full.status_code == 200 and full.content == (output / f"images/{scored[3]}_p0.jpg").read_bytes()
        assert requests.get(url + "picture", params={"artwork_id": "nope", "page": 0}, timeout=30).status_code == 404
        assert requests.get(url + "face", params={"artwork_id": scored[3], "page": 0, "idx": "x"}, timeout=30).status_code == 400
        assert requests.get(url + "face", params={"artwork_id": scored[3], "page": 0, "idx": 99}, timeout=30).status_code == 404
        label_page = requests.get(url + "label", timeout=30)
        assert "script-src 'self'" in label_page.headers["Content-Security-Policy"]  # its own script only
        assert "script-src" not in requests.get(url, timeout=30).headers["Content-Security-Policy"]  # the grid: none
        assert requests.get(url + "label", params={"order": "bogus"}, timeout=30).status_code == 400
        assert queue(order="uncertain", n=1, threshold=0.9)["pictures"][0]["artwork_id"] == scored[0]
        assert [p["scores"]["classifier"] for p in queue(order="score", n=5)["pictures"]] == sorted(SCORES, reverse=True)
        assert {p["artwork_id"] for p in queue(order="newest", n=500, min_score=0.5)["pictures"]} == {scored[0], scored[1]}
        assert queue(order="newest", n=500)["matching"] == total
        assert {(p["artwork_id"], p["page"]) for p in queue(order="newest", n=500, tag=tag)["pictures"]} == tagged
        assert all(p["status"] == "failed" for p in queue(order="newest", n=500, status="failed")["pictures"])
        assert queue(order="newest", manual="yes")["pictures"] == []

        for bad in ({"order": "random"}, {"n": "0"}, {"n": "abc"}, {"n": "501"}, {"min_score": "2"},
                    {"max_score": "nan"}, {"threshold": "-0.1"}, {"manual": "maybe"}, {"status": "lost"}):
            answer = requests.get(url + "api/queue", params=bad, timeout=30)
            assert answer.status_code == 400 and "error" in answer.json(), (bad, answer.text)

        # deciding: the page's token, the lock, and what a bad request gets
        token = requests.get(url, timeout=30).text.split('name="token" value="')[1].split('"')[0]

        def decide(body, **headers):
            return requests.post(url + "api/decide", json=body, headers=headers, timeout=30)

        keep = {"artwork_id": scored[3], "page": 0, "decision": "drop", "token": token}
        for body, code in (({**keep, "token": "forged"}, 403), ({k: v for k, v in keep.items() if k != "token"}, 403),
                           ({**keep, "decision": "delete"}, 400), ({**keep, "page": "0"}, 400), ({**keep, "page": -1}, 400),
                           ({**keep, "page": True}, 400), ({**keep, "artwork_id": 5}, 400),
                           ({**keep, "artwork_id": "no-such-artwork"}, 404),
                           ({**keep, "artwork_id": failed[0], "page": failed[1], "decision": "keep"}, 422)):
            answer = decide(body)
            assert answer.status_code == code and "error" in answer.json(), (body, answer.text)
        assert requests.post(url + "api/decide", data="[1, 2", timeout=30).status_code == 400
        assert decide(keep, Origin="http://evil.example").status_code == 403
        with OutputLock(output / "output.lock").hold("a long crawl"):
            busy = decide(keep)
        assert busy.status_code == 409 and "a long crawl" in busy.json()["error"]
        assert status_of(output, scored[3])[0] == "kept"  # none of those changed anything

        done = decide(keep)
        assert done.status_code == 200, done.text
        assert done.json() == {"said": f"{scored[3]} p0: dropped by hand", "artwork_id": scored[3], "page": 0,
                               "status": "dropped", "manual": "drop"}
        assert status_of(output, scored[3])[0] == "dropped"
        offered = [(p["artwork_id"], p["page"]) for p in queue(order="uncertain", n=500)["pictures"]]
        assert (scored[3], 0) not in offered and (scored[2], 0) in offered  # a label now, not a question
        assert [(p["artwork_id"], p["page"]) for p in queue(order="newest", manual="yes")["pictures"]] == [(scored[3], 0)]
        model = requests.get(url + "api/model", timeout=30).json()
        assert model["model"] is None and model["labels"] == {"keep": 0, "drop": 1, "total": 1}
        assert model["learning"]["state"] == "idle" and model["learning"]["every"] == 20
        assert decide({**keep, "decision": "clear"}).json()["manual"] is None
        assert requests.get(url + "api/model", timeout=30).json()["labels"]["total"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_model_endpoint_reads_the_classifiers_card_and_its_threshold_orders_the_queue(pixiv_site, tmp_path_factory,
                                                                                            tmp_path):
    output = crawled_copy(pixiv_site, tmp_path_factory, tmp_path / "output")
    scored = kept_ids(output)[:len(SCORES)]
    with sqlite3.connect(output / "catalog.db") as conn:
        conn.executemany("UPDATE images SET classifier_score = ? WHERE artwork_id = ? AND page = 0", zip(SCORES, scored))
    model = tmp_path / "model" / "classifier.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights")  # read for its hash only: the page never loads the model
    card = {"classes": ["mona", "other"], "target": "mona", "threshold": 0.3, "created": "2026-12-07T00:00:00Z",
            "metrics": {"val_accuracy": 0.9}, "data": {"images": 240, "per_class": {"mona": 80, "other": 160}}}
    model.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    server, url = start_review(output, f"CLASSIFIER_MODEL={model}")
    try:
        described = requests.get(url + "api/model", timeout=30).json()
        assert described["model"]["version"] == model_version(model) and described["model"]["threshold"] == 0.3
        assert described["model"]["learned_from"] == 240 and described["model"]["held_out"] == {"val_accuracy": 0.9}
        assert described["labels"] == {"keep": 0, "drop": 0, "total": 0}
        first = requests.get(url + "api/queue", params={"n": 1}, timeout=30).json()  # uncertain is the default
        assert first["threshold"] == 0.3 and first["model"] == model_version(model)
        assert first["pictures"][0]["artwork_id"] == scored[2]  # 0.3: on the card's threshold
    finally:
        server.terminate()
        server.wait(timeout=30)
