"""Client commands: each is a boto3 client of a running zeroscale server, signed like any AWS call."""

from __future__ import annotations

import io
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import click
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from zeroscale.cli.package import ARCHIVE_SUFFIXES, image_runtime, model_name
from zeroscale.cli.package import package_into_cache as package_model
from zeroscale.control.instances import INSTANCE_TYPES
from zeroscale.credentials import read_file
from zeroscale.progname import command_name

DEFAULT_URL = "http://127.0.0.1:8080"


class Clients:
    def __init__(self, endpoint_url: str, region: str | None, data_dir: Path) -> None:
        self.endpoint_url = endpoint_url
        session = boto3.session.Session(
            region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        kwargs: dict[str, Any] = {}
        if session.get_credentials() is None:
            creds = read_file(data_dir / "credentials")
            if creds is None:
                raise click.ClickException(
                    "No AWS credentials found. Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, point "
                    "--data-dir (or ZEROSCALE_DATA_DIR) at the server's data directory, or set "
                    "AWS_SHARED_CREDENTIALS_FILE to the credentials file the server wrote there "
                    f"(looked in {data_dir / 'credentials'})."
                )
            kwargs = {
                "aws_access_key_id": creds.access_key_id,
                "aws_secret_access_key": creds.secret_access_key,
            }
        config = Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=120)
        self.sagemaker = session.client("sagemaker", endpoint_url=endpoint_url, config=config, **kwargs)
        self.runtime = session.client("sagemaker-runtime", endpoint_url=endpoint_url, config=config, **kwargs)
        self.logs = session.client("logs", endpoint_url=endpoint_url, config=config, **kwargs)
        self._credentials = (
            Credentials(kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"])
            if kwargs
            else session.get_credentials()
        )
        self._region = session.region_name
        # zeroscale's own API is called with urllib: the certificates boto3 trusts (AWS_CA_BUNDLE, or the
        # profile's ca_bundle) are trusted there too, so a server with a private certificate answers both
        ca_bundle = session._session.get_config_variable("ca_bundle")
        self._tls = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None

    def rest(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes = b"") -> bytes:
        """Call zeroscale's own API (``/zeroscale/v1/<path>``), signed with SigV4 like the AWS calls.

        Returns the body of a 2xx answer; raises ``ApiError`` (a ClickException) with the server's message."""
        url = f"{self.endpoint_url.rstrip('/')}/zeroscale/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        # urllib would add an unsigned Content-Type to a request with a body; the server refuses unsigned ones
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        request = AWSRequest(method, url, data=body, headers=headers)
        SigV4Auth(self._credentials, "sagemaker", self._region).add_auth(request)
        http_request = urllib.request.Request(
            url, data=body or None, method=method, headers=dict(request.headers)
        )
        try:
            with urllib.request.urlopen(http_request, timeout=120, context=self._tls) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, bytes(err.read())) from None
        except urllib.error.URLError as err:
            raise click.ClickException(f"{url}: {err.reason}. Is `zeroscale serve` running there?") from None


class ApiError(click.ClickException):
    """A non-2xx answer from zeroscale's own API, with its ``__type`` and message."""

    def __init__(self, status: int, payload: bytes) -> None:
        try:
            err = json.loads(payload)
            message = f"{err.get('__type')}: {err.get('message')}"
        except (ValueError, AttributeError):
            message = payload.decode(errors="replace") or f"HTTP {status}"
        super().__init__(message)
        self.status = status


def check_endpoint_url(value: str) -> str | None:
    """Why ``value`` is not a server URL botocore can call (http:// or https://, a host, a numeric port);
    None when it is one."""
    example = f"http://{value}" if "://" not in value and value.strip() else DEFAULT_URL
    hint = f"give a URL such as {example}"
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        return f"{value!r} is not a URL: {hint}"
    if parts.scheme.lower() not in ("http", "https") or "://" not in value:
        return f"{value!r} has no http:// or https:// scheme: {hint}"
    if not parts.hostname:
        return f"{value!r} names no host: {hint}"
    return None


def _endpoint_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    problem = check_endpoint_url(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def common_options(f: Any) -> Any:
    f = click.option(
        "--endpoint-url",
        envvar="ZEROSCALE_ENDPOINT_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        callback=_endpoint_url,
        help="URL of the zeroscale server (http:// or https://, host and port).",
    )(f)
    f = click.option(
        "--region", envvar="AWS_DEFAULT_REGION", default=None, help="Region to sign requests for."
    )(f)
    f = click.option(
        "--data-dir",
        envvar="ZEROSCALE_DATA_DIR",
        default=".zeroscale",
        type=click.Path(path_type=Path),
        show_envvar=True,
        help="Server data directory, for its generated credentials file.",
    )(f)
    return f


def make_clients(endpoint_url: str, region: str | None, data_dir: Path) -> Clients:
    try:
        return Clients(endpoint_url, region, data_dir)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # botocore's "Invalid endpoint", for a URL the option's check let through
        raise click.BadParameter(str(exc), param_hint="--endpoint-url") from None


def check_endpoint_exists(clients: Clients, name: str) -> None:
    """ClickException when there is no endpoint ``name`` (for a command whose empty answer would not say)."""
    try:
        clients.sagemaker.describe_endpoint(EndpointName=name)
    except (ClientError, BotoCoreError) as exc:
        raise _endpoint_failure(exc, name) from None


def described(clients: Clients, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint's answer, or None when there is no such endpoint now (a deleted endpoint's logs and
    metrics are still read)."""
    try:
        desc: dict[str, Any] = clients.sagemaker.describe_endpoint(EndpointName=name)
    except (ClientError, BotoCoreError):
        return None
    return desc


def check_variant(clients: Clients, endpoint: str, variant: str, desc: dict[str, Any] | None = None) -> None:
    """Usage error naming ``--variant`` when the endpoint has no such variant (a filter that matches nothing
    would print nothing, as if it had been quiet); nothing when the endpoint is gone (its history is read).
    ``desc``: the endpoint's description when the caller has it (else it is asked for)."""
    desc = desc or described(clients, endpoint)
    if desc is None:
        return  # its variants cannot be checked
    names = [v["VariantName"] for v in desc.get("ProductionVariants") or []]
    names += [v["VariantName"] for v in desc.get("ShadowProductionVariants") or []]
    if names and variant not in names:
        raise click.BadParameter(
            f"endpoint {endpoint} has no variant {variant} (it has {', '.join(names)})",
            param_hint="--variant",
        )


def fail(exc: Exception) -> click.ClickException:
    """A client call's error as the command's error message."""
    return _fail(exc)


def _fail(exc: Exception) -> click.ClickException:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return click.ClickException(f"{err.get('Code')}: {err.get('Message')}")
    if isinstance(exc, EndpointConnectionError):
        return click.ClickException(
            f"{exc}. Is `zeroscale serve` running there? A server on another port or host: give "
            "--endpoint-url http://HOST:PORT, or export ZEROSCALE_ENDPOINT_URL."
        )
    return click.ClickException(str(exc))


def _environment(items: tuple[str, ...]) -> dict[str, str]:
    environment: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE (VALUE may be empty)", param_hint="--env")
        environment[key] = value
    return environment


def _model_url(model: str, code_dir: Path | None, image: str) -> str:
    packaged_already = "://" in model or model.endswith(ARCHIVE_SUFFIXES) or Path(model).is_dir()
    if code_dir is not None and packaged_already:  # never taken and dropped
        raise click.BadParameter(
            f"--code goes beside a bare model file, which deploy packages; {model} is packaged already: put "
            "the code in it (zeroscale package MODEL_FILE --code DIR) or deploy the bare model file",
            param_hint="--code",
        )
    if "://" in model:
        return model
    path = Path(model).expanduser().resolve()
    if not path.exists():
        raise click.BadParameter(f"{model} does not exist", param_hint="--model")
    if path.is_file() and not path.name.endswith(ARCHIVE_SUFFIXES):
        archive = package_model(path, code_dir, image)
        stored = model_name(path, image_runtime(image), code_dir)
        named = f" as {stored}" if stored != path.name else ""
        click.echo(f"packaged {model}{named} into {archive}", err=True)
        path = archive
    return f"file://{path}"


@click.command()
@click.option("--name", required=True, help="Name for the model, endpoint configuration and endpoint.")
@click.option(
    "--model",
    "model",
    required=True,
    help="model.tar.gz path or URL (s3://, file://), or a bare model file to package.",
)
@click.option(
    "--code",
    "code_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory with inference.py to package beside a bare model file.",
)
@click.option(
    "--image",
    default="sklearn",
    show_default=True,
    help="Runtime image: an alias (sklearn, xgboost, pytorch, onnx), a SageMaker framework image URI, or "
    "an image pushed with `zeroscale images push`; `zeroscale images` lists them.",
)
@click.option(
    "--memory",
    "memory_mb",
    default=2048,
    show_default=True,
    type=click.Choice(["1024", "2048", "3072", "4096", "5120", "6144"]),
    help="MemorySizeInMB.",
)
@click.option(
    "--max-concurrency",
    default=5,
    show_default=True,
    type=click.IntRange(1, 200),
    help="MaxConcurrency: requests the endpoint serves at once (one worker each); more wait, then throttle.",
)
@click.option("--provisioned", default=0, type=click.IntRange(0, 200), help="ProvisionedConcurrency.")
@click.option("--idle-timeout-s", type=float, help="Scale a worker in after this many idle seconds.")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    callback=lambda ctx, param, value: _environment(value),
    help="Model environment variable (repeatable).",
)
@click.option(
    "--instance-type",
    default=None,
    help="Deploy real-time on instances of this type (e.g. ml.m5.large) instead of serverless.",
)
@click.option(
    "--instance-count", default=1, show_default=True, type=click.IntRange(1), help="With --instance-type."
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until InService.")
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Keep an endpoint that ends Failed, with its configuration and model, to look at (by default "
    "they are removed once the reason is printed, so that the same deploy can be run again).",
)
@common_options
def deploy(
    name: str,
    model: str,
    code_dir: Path | None,
    image: str,
    memory_mb: str,
    max_concurrency: int,
    provisioned: int,
    idle_timeout_s: float | None,
    env: dict[str, str],
    instance_type: str | None,
    instance_count: int,
    wait: bool,
    keep_failed: bool,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Deploy a model as a serverless endpoint (or real-time, with --instance-type) and wait until it is
    InService. An endpoint that ends Failed is removed with its configuration and model (its reason is
    printed first), unless --keep-failed."""
    if instance_type:
        _check_instance_options(instance_type)
    clients = make_clients(endpoint_url, region, data_dir)
    environment = env
    serverless: dict[str, Any] = {"MemorySizeInMB": int(memory_mb), "MaxConcurrency": max_concurrency}
    if provisioned:
        serverless["ProvisionedConcurrency"] = provisioned
    tags = [{"Key": "zeroscale:idle-timeout-s", "Value": f"{idle_timeout_s:g}"}] if idle_timeout_s else []
    sm = clients.sagemaker
    container: dict[str, Any] = {"Image": image, "ModelDataUrl": _model_url(model, code_dir, image)}
    if environment:
        container["Environment"] = environment
    created: list[str] = []  # what this deploy made, removed again when a later step fails
    try:
        sm.create_model(ModelName=name, PrimaryContainer=container)
        created.append("model")
        variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": name}
        if instance_type:
            variant.update(InstanceType=instance_type, InitialInstanceCount=instance_count)
        else:
            variant["ServerlessConfig"] = serverless
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], Tags=tags)
        created.append("endpoint configuration")
        asked = time.monotonic()  # CreateEndpoint itself waits up to 2 s for the deployment: counted
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    except (ClientError, BotoCoreError) as exc:
        failure = _fail(exc)
        if created:
            raise click.ClickException(f"{failure.message}\n{_undo(sm, name, created)}") from None
        if "already existing" in failure.message:
            hint = f"Run `zeroscale delete {name}` first, or choose another --name."
            raise click.ClickException(f"{failure.message}\n{hint}") from None
        raise failure from None
    if not wait:
        click.echo(f"{name}: Creating")
        return
    status = _wait(clients, name, since=asked)
    if status == "InService":
        return
    if status == "Failed" and not keep_failed:  # its reason is printed: nothing is left to delete by hand
        click.echo(_undo(sm, name, [*created, "endpoint"], failed=True), err=True)
    raise SystemExit(1)


_SERVERLESS_ONLY = {
    "memory_mb": "--memory",
    "max_concurrency": "--max-concurrency",
    "provisioned": "--provisioned",
}


def _check_instance_options(instance_type: str) -> None:
    """Before anything is packaged or created: an instance type zeroscale serves (botocore's own check would
    list some 300 types, most of which zeroscale refuses anyway), and no serverless option beside it (a
    real-time variant's capacity is its instances: they would be ignored)."""
    ctx = click.get_current_context()
    given = [
        flag
        for param, flag in _SERVERLESS_ONLY.items()
        if ctx.get_parameter_source(param) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(
            f"{' and '.join(given)} size a serverless endpoint; with --instance-type the capacity is "
            "--instance-count instances of that type: leave out one or the other."
        )
    if instance_type not in INSTANCE_TYPES:
        families = ", ".join(sorted({f"ml.{t.split('.')[1]}.*" for t in INSTANCE_TYPES}))
        raise click.BadParameter(
            f"{instance_type} is not an instance type zeroscale serves; its families: {families} "
            "(e.g. ml.m5.large; README, Real-time endpoints)",
            param_hint="--instance-type",
        )


_DELETES = {
    "endpoint": ("delete_endpoint", "EndpointName"),
    "endpoint configuration": ("delete_endpoint_config", "EndpointConfigName"),
    "model": ("delete_model", "ModelName"),
}


def _undo(sm: Any, name: str, created: list[str], *, failed: bool = False) -> str:
    """Delete what a failed deploy made (newest first); the line that says what was removed, or what was
    left behind. ``failed``: the endpoint was made and ended Failed (else a call failed before)."""
    removed: list[str] = []
    left: list[str] = []
    for what in reversed(created):
        method, key = _DELETES[what]
        try:
            getattr(sm, method)(**{key: name})
            removed.append(what)
        except (ClientError, BotoCoreError) as exc:
            left.append(f"{what} ({_fail(exc).message})")
    what = "deploy failed" if failed else "deploy stopped"
    named = ", ".join(removed[:-1]) + " and " + removed[-1] if len(removed) > 1 else "".join(removed)
    line = f"{what}: removed the {named} {name} it had created." if removed else ""
    if failed and removed:
        line += " Fix the cause above and run it again (--keep-failed keeps them to look at)."
    if left:
        line += f" Could not remove the {', '.join(left)}: run `zeroscale delete {name}`."
    return line.strip()


def _endpoint_failure(exc: ClientError | BotoCoreError, name: str) -> click.ClickException:
    """A call on the endpoint ``name`` failed: that it does not exist, said so, or the call's error."""
    if isinstance(exc, ClientError) and _not_found(exc):
        return click.ClickException(f"Endpoint {name} does not exist (`zeroscale endpoints` lists them).")
    return _fail(exc)


def _not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    return err.get("Code") == "ValidationException" and str(err.get("Message", "")).startswith(
        "Could not find"
    )


def _wait(clients: Clients, name: str, timeout_s: float = 600.0, since: float | None = None) -> str:
    start = time.monotonic() if since is None else since
    spinner = "|/-\\"
    tty = sys.stderr.isatty()
    i = 0
    while True:
        try:
            desc = clients.sagemaker.describe_endpoint(EndpointName=name)
        except (ClientError, BotoCoreError) as exc:
            raise _fail(exc) from None
        status = str(desc["EndpointStatus"])
        elapsed = time.monotonic() - start
        if status not in ("Creating", "Updating"):
            if tty:
                click.echo("\r" + " " * 60 + "\r", nl=False, err=True)
            if status == "InService":
                click.secho(f"{name}: InService after {elapsed:.1f}s", fg="green")
                click.echo(
                    f"invoke: {command_name()} invoke {name} --body '[[...]]' --endpoint-url "
                    f"{clients.endpoint_url}"
                )
            else:
                click.secho(f"{name}: {status}", fg="red", err=True)
                if desc.get("FailureReason"):
                    click.echo(desc["FailureReason"], err=True)
            return status
        if elapsed > timeout_s:
            raise click.ClickException(f"{name} still {status} after {timeout_s:.0f}s")
        if tty:
            click.echo(f"\r{spinner[i % 4]} {name}: {status} ({elapsed:.1f}s)", nl=False, err=True)
        i += 1
        time.sleep(0.2)


@click.command()
@click.argument("name")
@click.option("--body", help="Request body as text.")
@click.option(
    "--file", "file", type=click.File("rb"), help="Read the request body from a file ('-' for stdin)."
)
@click.option(
    "--content-type", default="application/json", show_default=True, help="Content-Type of the request body."
)
@click.option("--accept", default=None, help="Accept header (default: the model's).")
@click.option(
    "--target-model",
    default=None,
    help="Multi-model endpoint: the model to invoke, its path under the endpoint's ModelDataUrl "
    "(e.g. model-a.tar.gz; TargetModel).",
)
@click.option(
    "--target-variant",
    default=None,
    help="Send the request to this production variant instead of one chosen by weight (TargetVariant).",
)
@click.option(
    "--target-container-hostname",
    default=None,
    help="Model of several containers invoked directly (InferenceExecutionConfig Mode Direct): the "
    "ContainerHostname of the one to invoke (TargetContainerHostname).",
)
@click.option(
    "--custom-attributes",
    default=None,
    help="Opaque text handed to the model with the request (CustomAttributes; "
    "the X-Amzn-SageMaker-Custom-Attributes header).",
)
@click.option(
    "--inference-id", default=None, help="An id for this request, passed to the model (InferenceId)."
)
@common_options
def invoke(
    name: str,
    body: str | None,
    file: io.BufferedReader | None,
    content_type: str,
    accept: str | None,
    target_model: str | None,
    target_variant: str | None,
    target_container_hostname: str | None,
    custom_attributes: str | None,
    inference_id: str | None,
    endpoint_url: str,
    region: str | None,
    data_dir: Path,
) -> None:
    """Invoke an endpoint and print the model's answer."""
    if (body is None) == (file is None):
        raise click.UsageError("give exactly one of --body or --file")
    payload = body.encode() if body is not None else file.read()  # type: ignore[union-attr]
    clients = make_clients(endpoint_url, region, data_dir)
    kwargs: dict[str, Any] = {"EndpointName": name, "Body": payload, "ContentType": content_type}
    for key, value in (
        ("Accept", accept),
        ("TargetModel", target_model),
        ("TargetVariant", target_variant),
        ("TargetContainerHostname", target_container_hostname),
        ("CustomAttributes", custom_attributes),
        ("InferenceId", inference_id),
    ):
        if value:
            kwargs[key] = value
    try:
        resp = clients.runtime.invoke_endpoint(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        failure = _fail(exc)
        hint = _invoke_hint(exc, name)
        if hint:
            raise click.ClickException(f"{failure.message} {hint}") from None  # one line, as every error
        raise failure from None
    out = resp["Body"].read()
    sys.stdout.buffer.write(out if out.endswith(b"\n") else out + b"\n")


def _invoke_hint(exc: Exception, name: str) -> str:
    """What to do next after InvokeEndpoint's ValidationError for an endpoint that is not there or that takes
    only asynchronous requests ("" for any other error)."""
    if not isinstance(exc, ClientError):
        return ""
    err = exc.response.get("Error", {})
    message = str(err.get("Message", ""))
    if err.get("Code") != "ValidationError" or not message.startswith(f"Endpoint {name} of account "):
        return ""
    if message.endswith(" not found."):
        return "`zeroscale endpoints` lists them."
    if "is an asynchronous endpoint" in message:
        return (
            "This CLI sends synchronous requests only: send it InvokeEndpointAsync with boto3 "
            "(invoke_endpoint_async) or `aws sagemaker-runtime invoke-endpoint-async`, then follow the "
            "request with `zeroscale async status INFERENCE_ID`."
        )
    return ""


@click.command()
@common_options
def endpoints(endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """List endpoints as a table: status, capacity (a serverless variant's MemorySizeInMB x MaxConcurrency,
    an instance variant's instance count x type; per variant when there are several), live workers and the
    memory their models hold in the warm cache (from the server's /metrics)."""
    clients = make_clients(endpoint_url, region, data_dir)
    rows: list[tuple[str, ...]] = []
    live = _live_state(endpoint_url)
    try:
        for page in clients.sagemaker.get_paginator("list_endpoints").paginate(
            SortBy="Name", SortOrder="Ascending"
        ):
            for ep in page["Endpoints"]:
                name = ep["EndpointName"]
                desc = clients.sagemaker.describe_endpoint(EndpointName=name)
                variants = desc.get("ProductionVariants", [])
                on_instances = any("CurrentInstanceCount" in v for v in variants)
                types = _instance_types(clients, desc) if on_instances else {}
                capacities = []
                for v in variants:
                    sc = v.get("CurrentServerlessConfig")
                    instance_type = types.get(v["VariantName"], "instance")
                    capacity = (
                        f"{sc['MemorySizeInMB']} MB x{sc['MaxConcurrency']}"
                        if sc
                        else f"{_instances(v)} x {instance_type}"
                    )
                    capacities.append(f"{v['VariantName']}: {capacity}" if len(variants) > 1 else capacity)
                config = ", ".join(capacities)
                workers, cached = live.get(name, (0, 0)) if live is not None else (None, None)
                rows.append(
                    (
                        name,
                        ep["EndpointStatus"],
                        config,
                        "-" if workers is None else str(workers),
                        "-" if cached is None else (f"{cached / 2**20:.1f} MB" if cached else "0"),
                        ep["CreationTime"].strftime("%Y-%m-%d %H:%M:%S"),
                    )
                )
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc) from None
    header = ("NAME", "STATUS", "CAPACITY", "WORKERS", "WARM CACHE", "CREATED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _instance_types(clients: Clients, desc: dict[str, Any]) -> dict[str, str]:
    """Variant name -> InstanceType, from the endpoint's configuration (DescribeEndpoint does not say)."""
    try:
        config = clients.sagemaker.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    except (ClientError, BotoCoreError, KeyError):  # deleted meanwhile: the count alone is shown
        return {}
    variants = config.get("ProductionVariants", [])
    return {v["VariantName"]: v["InstanceType"] for v in variants if v.get("InstanceType")}


def _live_state(endpoint_url: str) -> dict[str, tuple[int, int]] | None:
    """Per endpoint: live workers (all variants) and bytes of its models in the warm cache, read from the
    unsigned /metrics; None when the server does not answer it."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    workers: dict[str, int] = {}
    cached: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("endpoint_name")
            if name is None:
                continue
            if sample.name == "zeroscale_workers":
                workers[name] = workers.get(name, 0) + int(sample.value)
            elif sample.name == "zeroscale_warm_cache_endpoint_bytes":
                cached[name] = int(sample.value)
    return {name: (workers.get(name, 0), cached.get(name, 0)) for name in workers.keys() | cached.keys()}


@click.command()
@click.argument("name")
@click.option("--endpoint-only", is_flag=True, help="Keep the model and endpoint configuration of that name.")
@common_options
def delete(name: str, endpoint_only: bool, endpoint_url: str, region: str | None, data_dir: Path) -> None:
    """Delete an endpoint and, unless --endpoint-only, the endpoint configuration and model of the same name
    (what `deploy` made), also when there is no endpoint. Fails when nothing of that name exists."""
    sm = make_clients(endpoint_url, region, data_dir).sagemaker
    removed: list[str] = []
    try:
        sm.delete_endpoint(EndpointName=name)
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        removed.append("endpoint")
    except ClientError as exc:
        if endpoint_only or not _not_found(exc):
            raise _fail(exc) from None
    except BotoCoreError as exc:
        raise _fail(exc) from None
    errors: list[str] = []
    if not endpoint_only:
        for what, (method, key) in _DELETES.items():
            try:
                getattr(sm, method)(**{key: name})
                removed.append(what)
            except ClientError as exc:
                if not _not_found(exc):  # not found: not made by deploy, or already gone
                    errors.append(_fail(exc).message)
            except BotoCoreError as exc:
                errors.append(_fail(exc).message)
    if removed:
        note = "" if "endpoint" in removed else " (no endpoint)"
        click.echo(f"{name}: deleted {', '.join(removed)}{note}")
    if errors:
        raise click.ClickException("\n".join(errors))
    if not removed:
        raise click.ClickException(f"No endpoint, endpoint configuration or model named {name}.")


@click.command()
@click.argument("name")
@click.argument("changes", nargs=-1, required=True, metavar="VARIANT=WEIGHT[:INSTANCES]...")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until InService.")
@common_options
def traffic(
    name: str, changes: tuple[str, ...], wait: bool, endpoint_url: str, region: str | None, data_dir: Path
) -> None:
    """Shift traffic between an endpoint's variants, and resize real-time ones, without a redeploy
    (UpdateEndpointWeightsAndCapacities). `zeroscale traffic demo A=0 B=1:2` sends everything to B and
    runs B on 2 instances."""
    desired: list[dict[str, Any]] = []
    for change in changes:
        variant, _, rest = change.partition("=")
        weight, _, count = rest.partition(":")
        try:
            item: dict[str, Any] = {"VariantName": variant, "DesiredWeight": float(weight)}
            if count:
                item["DesiredInstanceCount"] = int(count)
        except ValueError:
            raise click.UsageError(f"{change!r}: write VARIANT=WEIGHT or VARIANT=WEIGHT:INSTANCES") from None
        if not variant:
            raise click.UsageError(f"{change!r}: the variant name is missing")
        desired.append(item)
    clients = make_clients(endpoint_url, region, data_dir)
    try:
        clients.sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=name, DesiredWeightsAndCapacities=desired
        )
    except (ClientError, BotoCoreError) as exc:
        raise _endpoint_failure(exc, name) from None
    if not wait:
        click.echo(f"{name}: Updating")
        return
    if _wait(clients, name) != "InService":
        raise SystemExit(1)
    desc = clients.sagemaker.describe_endpoint(EndpointName=name)
    for v in desc.get("ProductionVariants", []):
        click.echo(
            f"  {v['VariantName']}: weight {v['CurrentWeight']:g}"
            + (f", {_instances(v)} instance(s)" if "CurrentInstanceCount" in v else "")
        )


def _instances(variant: Mapping[str, Any]) -> str:
    """An instance variant's instances: those running, "of" those asked for when fewer run (the host's
    memory holds fewer, or an update is starting them)."""
    current, desired = variant.get("CurrentInstanceCount", "?"), variant.get("DesiredInstanceCount")
    return f"{current}" if desired is None or desired == current else f"{current} of {desired}"


client_commands = [deploy, invoke, endpoints, traffic, delete]
