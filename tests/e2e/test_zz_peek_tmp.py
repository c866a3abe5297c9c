import json
from pathlib import Path
from e2e.conftest import handler_model
from serverproc import deploy
from e2e.test_failures import BEHAVIOURS, model_error, HOSTILE, failed, BROKEN_LOAD

def test_peek(sm, smr, tmp_path):
    url = handler_model(tmp_path, BEHAVIOURS)
    deploy(sm, "p", url)
    for p in ({"raise": 1}, {"exit": 1}, {"alloc": 1}):
        r = model_error(smr, "p", p)
        print(json.dumps({k: r[k] for k in ("Error", "OriginalStatusCode", "OriginalMessage", "LogStreamArn")}, indent=1))
    for kind, (make, _) in HOSTILE.items():
        root = tmp_path / kind; root.mkdir()
        print(kind, "=>", failed(sm, "h-" + kind, make(root)))
    (tmp_path/"b").mkdir()
    print("broken =>", failed(sm, "broken", handler_model(tmp_path/"b", BROKEN_LOAD)))
    print("image =>", failed(sm, "img", url, image="example.com/foo:1"))
