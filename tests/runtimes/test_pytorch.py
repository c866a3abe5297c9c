"""The PyTorch runtime in-process (TorchScript loading, the toolkit's default hooks) and its fork safety."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.image_uris import resolve_image
from zeroscale.runtimes.registry import RUNTIMES
from zeroscale.workers.forkserver import THREAD_ENV

from .forkpair import run_pair

RUNTIME = RUNTIMES["pytorch"]
# torch 2.13 deprecates TorchScript in favour of torch.export; SageMaker's PyTorch images still load it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
JSON = {"content-type": "application/json", "accept": "application/json"}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class TwoHeads(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(dim=1), x * 2


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop("inference", None)


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(6, 4))


def load(model_dir: Path) -> Handler:
    return Handler.load(str(model_dir), RUNTIME.model_fn, {}, defaults=RUNTIME.defaults)


def run_in_fresh_python(code: str) -> str:
    env = {**os.environ, **THREAD_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_preload_starts_no_thread_and_a_fork_computes() -> None:
    """What the zygote does: preload, then fork; the child runs a multi-threadable op and exits."""
    code = textwrap.dedent(
        """
        import os, sys
        from zeroscale.runtimes.registry import RUNTIMES
        RUNTIMES['pytorch'].preload()
        assert 'torch' in sys.modules
        print(len(os.listdir('/proc/self/task')))
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            import torch
            x = torch.randn(256, 256)
            ok = torch.allclose((x @ x).sum(), (x.double() @ x.double()).sum().float(), rtol=1e-3)
            print(torch.get_num_threads(), ok)
            sys.stdout.flush()
            os._exit(0)
        import time
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:  # a hung child (a lock or thread pool copied by fork)
                os.kill(pid, 9)
                print('hung')
                sys.exit(0)
            time.sleep(0.01)
        print(0)
        """
    )
    assert run_in_fresh_python(code).split("\n") == ["1", "1 True", "0"]


WARM_PROBE = """
    import gc, sys
    import torch
    from zeroscale.runtimes import codecs
    from zeroscale.runtimes.registry import RUNTIMES
    runtime = RUNTIMES["pytorch"]
    runtime.preload()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    torch.jit.save(torch.jit.script(net), sys.argv[1] + "/model.pt")
    gc.collect(); gc.freeze()

    def timed(_state):
        hooks = runtime.defaults(False)
        model = runtime.model_fn(sys.argv[1])
        row = b"[[0.2, 0.9, 0.1, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]"
        answer, _ = hooks.output_fn(hooks.predict_fn(hooks.input_fn(row, codecs.JSON), model), codecs.JSON)
        return [answer.decode(), torch.get_num_threads()]
    """


def test_a_torch_without_torchscript_still_preloads_and_its_spares_skip_the_warm_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zeroscale.runtimes import pytorch

    def no_script(module: object) -> object:
        raise RuntimeError("TorchScript is not available")

    monkeypatch.setattr(torch.jit, "script", no_script)
    monkeypatch.setattr(pytorch, "_warm_model", b"")
    pytorch.preload()
    assert pytorch._warm_model == b""
    assert "no warm-up model for the pytorch runtime's spares" in capsys.readouterr().err
    pytorch.warm()  # nothing to load: returns


def test_a_warmed_fork_loads_and_predicts_copying_fewer_of_the_zygotes_pages(tmp_path: Path) -> None:
    """The runtime's ``warm`` (what a zygote's spare runs before it waits: its own TorchScript module loaded
    and asked one JSON row) leaves the fork with one thread (it may become a template) and torch pinned to
    one, and another model's load and first predict in it copy under a third of the pages, same answer."""
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(WARM_PROBE, str(tmp_path))
    assert warm_answer == cold_answer
    assert (threads, warm_answer[1]) == (1, 1)  # one thread in the process, torch pinned to one
    assert warm_faults < cold_faults / 3, (warm_faults, cold_faults)  # ~145 against ~1,130 here


@pytest.mark.parametrize(("optimize", "want"), [("", "False"), ("true", "True")])
def test_worker_defaults_pin_one_thread_and_choose_the_executor(optimize: str, want: str) -> None:
    code = (
        "import os, torch\n"
        "from zeroscale.runtimes.registry import RUNTIMES\n"
        "torch.set_num_threads(2)\n"
        f"os.environ['ZEROSCALE_TORCHSCRIPT_OPTIMIZE'] = {optimize!r}\n"
        "RUNTIMES['pytorch'].defaults(False)\n"
        "print(torch.get_num_threads(), torch.get_num_interop_threads(), "
        "torch._C._get_graph_executor_optimize())\n"
    )
    assert run_in_fresh_python(code) == f"1 1 {want}"


@pytest.mark.parametrize(("optimize", "want"), [("", [False, False]), ("true", [True, True])])
def test_default_predict_fn_sets_the_executor_in_the_serving_thread(optimize: str, want: list[bool]) -> None:
    """The TorchScript optimizer switch is thread-local: the worker answers on connection threads, not on
    the thread that loaded the model, so the predict_fn must set it where it runs."""
    code = textwrap.dedent(
        f"""
        import os, threading, torch
        from zeroscale.runtimes.registry import RUNTIMES
        os.environ['ZEROSCALE_TORCHSCRIPT_OPTIMIZE'] = {optimize!r}
        defaults = RUNTIMES['pytorch'].defaults(False)

        class Probe(torch.nn.Module):
            def forward(self, x):
                return torch._C._get_graph_executor_optimize()

        seen = []
        def serve():
            for _ in range(2):
                seen.append(defaults.predict_fn(torch.ones(1), Probe()))
        thread = threading.Thread(target=serve)
        thread.start()
        thread.join()
        print(seen)
        """
    )
    assert run_in_fresh_python(code) == str(want)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "resnet.pt"])
def test_torchscript_model_json_csv_npy(tmp_path: Path, net: Net, rows: np.ndarray, name: str) -> None:
    scripted = torch.jit.script(net) if name != "model.pth" else torch.jit.trace(net, torch.zeros(1, 4))
    scripted.save(str(tmp_path / name))
    handler = load(tmp_path)
    assert not handler.model.training
    with torch.no_grad():
        want = net(torch.tensor(rows, dtype=torch.float32)).numpy()

    status, body, content_type = handler.invoke(json.dumps(rows.tolist()).encode(), JSON)
    assert (status, content_type) == (200, "application/json"), body
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6, atol=1e-7)

    csv = "\n".join(",".join(repr(v) for v in row) for row in rows.tolist()).encode()
    status, body, content_type = handler.invoke(csv, {"content-type": "text/csv", "accept": "text/csv"})
    assert (status, content_type) == (200, "text/csv")
    np.testing.assert_allclose(
        np.loadtxt(io.StringIO(body.decode()), delimiter=","), want, rtol=1e-6, atol=1e-6
    )

    buf = io.BytesIO()
    np.save(buf, rows.astype(np.float32))
    npy = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    status, body, content_type = handler.invoke(buf.getvalue(), npy)
    assert (status, content_type) == (200, "application/x-npy")
    got = np.load(io.BytesIO(body))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_tuple_outputs(tmp_path: Path, rows: np.ndarray) -> None:
    torch.jit.script(TwoHeads()).save(str(tmp_path / "model.pt"))
    status, body, _ = load(tmp_path).invoke(json.dumps(rows.tolist()).encode(), JSON)
    assert status == 200
    sums, doubled = json.loads(body)
    x = rows.astype(np.float32)
    np.testing.assert_allclose(sums, x.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(doubled, x * 2, rtol=1e-6)


def test_state_dict_needs_model_fn(tmp_path: Path, net: Net, rows: np.ndarray) -> None:
    torch.save(net.state_dict(), tmp_path / "model.pth")
    with pytest.raises(
        ValueError, match=r"is not a TorchScript model .* define model_fn in code/inference\.py"
    ):
        load(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import os
            import torch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.hidden = torch.nn.Linear(4, 8)
                    self.out = torch.nn.Linear(8, 3)

                def forward(self, x):
                    return self.out(torch.relu(self.hidden(x)))

            def model_fn(model_dir):
                model = Net()
                model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
                return model  # still in training mode: the default predict_fn puts it in eval mode
            """
        )
    )
    handler = load(tmp_path)
    status, body, _ = handler.invoke(json.dumps(rows.tolist()).encode(), JSON)
    assert status == 200, body
    assert not handler.model.training
    with torch.no_grad():
        want = net(torch.tensor(rows, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6, atol=1e-7)


def test_missing_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No model\.pt or model\.pth in .* defines no model_fn"):
        load(tmp_path)


def test_bad_requests(tmp_path: Path, net: Net) -> None:
    torch.jit.script(net).save(str(tmp_path / "model.pt"))
    handler = load(tmp_path)
    assert handler.invoke(b"a,b,c,d", {"content-type": "text/csv"})[0] == 400
    assert handler.invoke(b"[[1, 2", JSON)[0] == 400
    status, body, _ = handler.invoke(b"[[1, 2, 3]]", JSON)  # wrong width: the model raises, a ModelError
    assert status == 500
    assert b"RuntimeError" in body


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
        "763104351884.dkr.ecr.eu-central-1.amazonaws.com/pytorch-inference:2.3.0-cpu-py311-ubuntu20.04-sagemaker",
        "pytorch-inference:2.1",
        "pytorch",
        "pytorch:2.13",
    ],
)
def test_images(image: str) -> None:
    assert resolve_image(image) == "pytorch"


def test_registry_entry() -> None:
    assert RUNTIME.framework_version == torch.__version__
    assert set(RUNTIME.content_types) == set(codecs.DECODERS)
