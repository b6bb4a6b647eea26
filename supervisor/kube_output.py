"""`ovpn-supervisor export kubernetes`: write an export as files (+ kustomization.yaml, NOTES.md)
or as one YAML stream, and report its notes on stderr like `import-compose` does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from supervisor.config import StackConfig
from supervisor.exit_codes import EX_CONFIG
from supervisor.kube_common import (
    WAIT_IMAGE,
    WAIT_IMAGE_TAG,
    ExportError,
    ExportOptions,
    Manifest,
)
from supervisor.kube_export import KubeExport, export_stack
from supervisor.kube_workloads import secret_name

KUSTOMIZATION = "kustomization.yaml"
NOTES = "NOTES.md"


class _Dumper(yaml.SafeDumper):
    """Block style throughout, multi-line strings (the wait scripts) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a probe handler shared by three probes is written out three times


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(documents: list[Manifest]) -> str:
    """Manifests as one multi-document YAML text."""
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )


def kustomization(export: KubeExport) -> Manifest:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": export.namespace,
        "resources": list(export.files),
        # The one image the config does not name: pin or mirror it here.
        "images": [{"name": WAIT_IMAGE, "newName": WAIT_IMAGE, "newTag": WAIT_IMAGE_TAG}],
    }


def notes_text(export: KubeExport, stack: StackConfig, options: ExportOptions) -> str:
    """NOTES.md: how to apply, the dependency waits, the secrets to create, every note."""
    ns = export.namespace
    lines = [
        f"# Kubernetes manifests for project {stack.project}",
        "",
        f"Written by `ovpn-supervisor export kubernetes` from `{stack.source or 'the config'}`.",
        f"Apply with `kubectl apply -k .` (namespace `{ns}`); see deploy/kubernetes/README.md",
        "in the ovpn-supervisor repository for what differs from one host.",
        "",
        "## Dependency waits",
        "",
        "Each `depends_on` entry is an init container that loops over `kubectl wait` against the",
        "Kubernetes API (ServiceAccount, Role and RoleBinding in dependency-wait-rbac.yaml; the",
        "token is mounted into the init containers only). Waits happen when a pod starts, not",
        "when a container restarts inside it.",
        "",
        "| service | waits for | condition | checked as |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {w.service} | {w.dependency} | {w.condition.value} | {w.checked_as} |"
        for w in export.waits
    ]
    lines += ["", "## Secrets", ""]
    if options.include_secret_values:
        lines.append("Written to secrets.yaml and the `*-env-secret` Secrets: keep them private.")
    else:
        lines += [
            "No secret value is in these files. Create the Secrets before applying:",
            "",
            "```sh",
        ]
        lines += [
            f"kubectl -n {ns} create secret generic {secret_name(name)} "
            f"--from-file={name}={secret.file}"
            for name, secret in stack.secrets.items()
        ]
        lines.append("```")
        lines.append("")
        lines.append("and the `*-env-secret` Secrets that the warnings below name.")
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in export.notes] or ["- none"]
    return "\n".join(lines) + "\n"


def write_export(export: KubeExport, out_dir: Path, notes: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "# Written by `ovpn-supervisor export kubernetes`; see NOTES.md.\n"
    for name, documents in export.files.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(header + dump(documents), encoding="utf-8")
    (out_dir / KUSTOMIZATION).write_text(header + dump([kustomization(export)]), encoding="utf-8")
    (out_dir / NOTES).write_text(notes, encoding="utf-8")


def read_secrets(stack: StackConfig) -> dict[str, bytes]:
    """The secret files' contents (the loader has just checked that they can be read)."""
    return {name: secret.file.read_bytes() for name, secret in stack.secrets.items()}


def cmd_export_kubernetes(
    args: argparse.Namespace, load: Callable[[argparse.Namespace], StackConfig | None]
) -> int:
    """Export the config; notes go to stderr, the manifests to -o DIR (or stdout for -)."""
    stack = load(args)
    if stack is None:
        return EX_CONFIG
    options = ExportOptions(
        namespace=args.namespace,
        expose_as=args.expose_as,
        include_secret_values=args.include_secret_values,
    )
    try:
        export = export_stack(stack, options, read_secrets(stack))
    except (ExportError, OSError) as exc:
        print(f"cannot export {stack.source}: {exc}", file=sys.stderr)
        return EX_CONFIG
    for note in export.notes:
        print(note, file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(dump(export.manifests()))
        return 0
    out_dir = Path(args.output)
    write_export(export, out_dir, notes_text(export, stack, options))
    print(
        f"wrote {out_dir} ({len(export.manifests())} manifests in {len(export.files)} files, "
        f"{KUSTOMIZATION}, {NOTES}); apply with: kubectl apply -k {out_dir}",
        file=sys.stderr,
    )
    return 0
