#!/usr/bin/env python3
"""Checks the manifests in deploy/kubernetes against the API schemas, each other and the repo.

Usage: python3 scripts/check_manifests.py [--root DIR]   (DIR defaults to deploy/kubernetes)
       python3 scripts/check_manifests.py --import-crd CRD.yaml [--crd-version V] \
           --source "OWNER/REPO PATH at TAG (commit SHA)"   (writes DIR/schemas/G_V_KIND.json)

Needs PyYAML, kubernetes-validate 1.37.0 and jsonschema 4.26.0 from PyPI (scripts/setup.sh
installs them); TOML is read with the standard library's tomllib. Works offline; no cluster
is needed, and kubectl only for the render check. Exits 1 with one line per problem, or
prints a summary. What it checks:

- schemas, offline: every object of every YAML file (components included, and the
  configMapGenerator's ConfigMaps) against the Kubernetes 1.32 JSON schemas that
  kubernetes-validate ships, strict (no field the API does not define); objects of CRD kinds
  (InferencePool, Gateway, HTTPRoute, PodMonitor, ScaledObject) against DIR/schemas/, JSON
  Schemas converted from the upstream CRDs' openAPIV3Schema (--import-crd; their $comment
  names the source and license): types, required fields, enums, patterns, bounds, closed
  objects, unique list-map keys; their metadata against ObjectMeta. A kind with neither
  schema fails. Not evaluated: CEL rules (x-kubernetes-validations), formats, admission
  webhooks. schemas/ is data for this script: no kustomization may list it;
- when kubectl (or kustomize) is on PATH: `kubectl kustomize DIR` renders, and so does DIR
  with each Component added to its `components:` (on a copy); each render yields exactly the
  objects of the listed files, all in the kustomization's namespace, valid against the
  schemas (patched objects included);
- every YAML document has apiVersion, kind and metadata.name; no (kind, name) twice;
- each kustomization.yaml (or Component) lists every YAML file of its directory tree
  (a subdirectory with its own kustomization is listed as a directory or is an opt-in
  Component), every listed path exists, objects carry no other namespace than the
  kustomization's; configMapGenerator files exist and become ConfigMaps for the checks
  below; copies kept here of repo files (the Grafana dashboard) equal their originals;
- the InferencePool (inference.networking.k8s.io/v1): spec.selector.matchLabels,
  spec.targetPorts (1-8 unique numbers) and spec.endpointPickerRef with a port and a
  failureMode of FailOpen or FailClose; its selector matches the pod templates of exactly
  the Deployments that run `switchyard serve` (the pools), which expose the target port;
  the picker's Service exists, has that port (appProtocol http2) and selects the
  `switchyard epp` pods, whose --grpc-addr is that port;
- every ConfigMap key ending in .toml parses; device and model profiles equal
  profiles/devices/NAME.toml and profiles/models/NAME.toml when those exist;
- every switchyard.toml (a TOML with [model]) against the Rust config structs
  (scheduler/src/config/mod.rs, tier.rs: unknown keys, missing keys, enum values, value
  types) and the rules Config::validate enforces (ids, URLs, endpoint profiles);
- each EPP [[endpoints]] entry's profile exists in profiles/devices/ or as a profile file
  in a ConfigMap; a DNS endpoint names a headless Service here, on its port, whose pods are
  in the InferencePool and whose node config has a device of that profile; every pool is
  some endpoint's;
- every Service (headless ones in particular) selects some Deployment's pods and its
  targetPorts are container ports there; Deployment selectors match their own template
  and no other Deployment's;
- each container's `--config FILE` is mounted (from a ConfigMap key that exists), and so
  are the profiles, model spec and model directory that config names (profiles_dir and
  paths relative to the file, as Config::from_toml anchors them); --addr, --grpc-addr,
  --health-addr and --metrics-addr ports are container ports; probes use existing ports,
  HTTP probe paths are routes of server/src/http.rs, the EPP's gRPC probes ask for the
  `readiness` and `liveness` services on its health port; CUDA/ROCm devices have
  nvidia.com/gpu / amd.com/gpu limits (and ordinals within them), ONNX and sim nodes none,
  and each device profile's vendor suits its backend; referenced ConfigMaps and PVCs exist;
- PodMonitors select pods that have the named port; every pool and the EPP are scraped;
- HTTPRoutes' InferencePool backends and Gateway parents exist;
- HPAs and KEDA ScaledObjects scale Deployments defined here (min <= max), no Deployment by
  two autoscalers in one render; KEDA metricTypes are AverageValue, Value or Utilization,
  prometheus triggers have serverAddress, query and a numeric threshold; an autoscaler on
  the EPP's switchyard_pool_desired_replicas{pool} names one pool that is the EPP endpoint
  (id) of the Deployment it scales, in this namespace, with the target that makes replicas
  equal the gauge (AverageValue 1), and a KEDA trigger errors on an empty result
  (ignoreNullValues "false") rather than reading 0.
"""

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_manifests: PyYAML is missing: pip install pyyaml")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# libyaml's loader where PyYAML has it (its wheels do): several times faster.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Files kept under the kustomization root as copies of repo files (kustomize refuses to
# read outside its root): copy (relative to the root) -> original (relative to the repo).
COPIES = {
    "monitoring/switchyard.json": "deploy/grafana/switchyard.json",
}

FAILURE_MODES = {"FailOpen", "FailClose"}
GPU_RESOURCE = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu"}
BACKEND_VENDOR = {"cuda": "nvidia", "rocm": "amd", "onnx": "cpu"}
ADDR_FLAGS = ("--addr", "--grpc-addr", "--health-addr", "--metrics-addr")

# Schema validation. Built-in kinds: the JSON schemas that kubernetes-validate (PyPI) ships
# for each Kubernetes release, the "strict" ones (no property the API does not define), for
# this release. CRD kinds: JSON Schemas under ROOT/schemas/, converted from the upstream
# CRDs' openAPIV3Schema by --import-crd, validated with jsonschema. scripts/setup.sh installs
# exactly these versions.
K8S_VERSION = "1.32"
VALIDATOR_PINS = ("kubernetes-validate==1.37.0", "jsonschema==4.26.0")
SCHEMA_DIR = "schemas"  # under the kustomization root; data for this script, not resources
SCHEMA_KEYS = {
    "type", "properties", "items", "required", "enum", "pattern", "minimum",
    "maximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
    "maxProperties", "uniqueItems", "additionalProperties", "anyOf", "oneOf", "allOf", "not",
}

# The endpoint picker's per-pool replica target (server/src/autoscale.rs), label pool = the
# [[endpoints]] id, and what makes an autoscaler's replica count equal it: an External
# metric (or KEDA trigger) with an AverageValue target of 1 (desired = ceil(value / 1)).
DESIRED_GAUGE = "switchyard_pool_desired_replicas"
KEDA_METRIC_TYPES = {"AverageValue", "Value", "Utilization"}
# Kinds kustomize leaves without a namespace.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass",
    "GatewayClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "ClusterTriggerAuthentication",
}


class Checker:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.errors = []
        self.notes = []
        self.objects = []  # (file relative to repo, doc)
        self.files = []  # YAML files holding objects
        self.namespace = None
        self.toml_count = 0
        self.kustomizations = []
        self.crd_validators = {}  # (apiVersion, kind) -> (jsonschema validator, schema file)
        self.schema_cache = {}  # object as JSON (namespace left out) -> (problems, against what)
        self.schema_counts = {}  # against what -> objects validated
        self.endpoint_deployments = {}  # EPP endpoint id -> names of the Deployments behind it
        self.renders = []
        self.kv = None
        self.reported = set()  # (Kind/name, schema problem) already reported

    # ---------------------------------------------------------------- helpers

    def err(self, msg):
        self.errors.append(msg)

    def rel(self, path):
        return os.path.relpath(path, REPO)

    def by_kind(self, kind):
        return [(f, d) for f, d in self.objects if d.get("kind") == kind]

    def find(self, kind, name):
        for f, d in self.objects:
            if d.get("kind") == kind and d["metadata"].get("name") == name:
                return d
        return None

    @staticmethod
    def ident(doc):
        return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"

    # ------------------------------------------------------------ load YAML

    def load(self):
        if not os.path.isdir(self.root):
            self.err(f"{self.rel(self.root)}: no such directory")
            return
        kustomizations = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            if dirpath == self.root and SCHEMA_DIR in dirnames:
                dirnames.remove(SCHEMA_DIR)  # validation data for this script, no manifests
            for fn in sorted(filenames):
                if not fn.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(dirpath, fn)
                try:
                    with open(path, encoding="utf-8") as fh:
                        docs = [d for d in yaml.load_all(fh, Loader=YAML_LOADER) if d is not None]
                except yaml.YAMLError as e:
                    self.err(f"{self.rel(path)}: not valid YAML: {e}")
                    continue
                if fn in ("kustomization.yaml", "kustomization.yml"):
                    if len(docs) != 1 or not isinstance(docs[0], dict):
                        self.err(f"{self.rel(path)}: a kustomization is one YAML mapping")
                        continue
                    kustomizations.append((path, docs[0]))
                    continue
                self.files.append(path)
                for i, d in enumerate(docs):
                    where = f"{self.rel(path)} (document {i + 1})"
                    if not isinstance(d, dict):
                        self.err(f"{where}: not a mapping")
                        continue
                    missing = [k for k in ("apiVersion", "kind") if not d.get(k)]
                    meta = d.get("metadata")
                    if not isinstance(meta, dict) or not meta.get("name"):
                        missing.append("metadata.name")
                    if missing:
                        self.err(f"{where}: missing {', '.join(missing)}")
                        continue
                    self.objects.append((self.rel(path), d))
        self.kustomizations = kustomizations
        if not any(os.path.dirname(p) == self.root for p, _ in kustomizations):
            self.err(f"{self.rel(self.root)}/kustomization.yaml is missing")
        for path, k in kustomizations:
            self.check_kustomization(path, k, kustomizations)
        seen = {}
        for f, d in self.objects:
            key = (d["kind"], d["metadata"]["name"])
            if key in seen:
                self.err(f"{f}: {self.ident(d)} is also defined in {seen[key]}")
            seen[key] = f

    def check_kustomization(self, path, k, all_kust):
        base = os.path.dirname(path)
        where = self.rel(path)
        kind = k.get("kind", "Kustomization")
        if kind not in ("Kustomization", "Component"):
            self.err(f"{where}: kind must be Kustomization or Component, not {kind}")
        is_root = base == self.root
        if is_root:
            self.namespace = k.get("namespace")
            if not self.namespace:
                self.err(f"{where}: sets no namespace")
        listed = {}
        for field in ("resources", "components"):
            for entry in k.get(field) or []:
                if not isinstance(entry, str):
                    self.err(f"{where}: {field} entry {entry!r} is not a path")
                    continue
                if "://" in entry or entry.startswith("github.com/"):
                    self.notes.append(f"{where}: remote {field} entry {entry} not checked")
                    continue
                target = os.path.normpath(os.path.join(base, entry))
                schemas = os.path.join(self.root, SCHEMA_DIR)
                if target == schemas or target.startswith(schemas + os.sep):
                    self.err(f"{where}: {field} lists {entry}; {SCHEMA_DIR}/ holds this script's CRD schemas, not resources")
                    continue
                if not os.path.exists(target):
                    self.err(f"{where}: {field} lists {entry}, which does not exist")
                    continue
                if os.path.isdir(target) and not any(
                    os.path.exists(os.path.join(target, n))
                    for n in ("kustomization.yaml", "kustomization.yml")
                ):
                    self.err(f"{where}: {field} lists directory {entry} without a kustomization.yaml")
                if target in listed:
                    self.err(f"{where}: lists {entry} twice")
                listed[target] = field
        # Every YAML file of this kustomization's tree (down to nested kustomizations) is
        # listed, and so is every nested kustomization directory but opt-in Components.
        kdirs = [os.path.dirname(p) for p, _ in all_kust]

        def owner(path):
            above = [r for r in kdirs if path.startswith(r + os.sep)]
            return max(above, key=len) if above else None

        for f in self.files:
            if owner(f) == base and f not in listed:
                self.err(f"{where}: does not list {os.path.relpath(f, base)} in resources")
        for p, sub in all_kust:
            d = os.path.dirname(p)
            if owner(d) != base or d in listed:
                continue
            if sub.get("kind") == "Component":
                continue  # opt-in: enabled with `components:` (README.md)
            self.err(f"{where}: nested kustomization {os.path.relpath(d, base)} is not listed")
        # Namespaces of the objects it lists.
        ns = k.get("namespace") or self.namespace
        for f, d in self.objects:
            if os.path.normpath(os.path.join(REPO, f)) in listed and ns:
                obj_ns = d["metadata"].get("namespace")
                if obj_ns and obj_ns != ns:
                    self.err(f"{f}: {self.ident(d)} sets namespace {obj_ns}, the kustomization {ns}")
        # configMapGenerator: files exist, and the generated ConfigMaps join the objects.
        gen_opts = k.get("generatorOptions") or {}
        for g in k.get("configMapGenerator") or []:
            name = g.get("name")
            if not name:
                self.err(f"{where}: a configMapGenerator entry has no name")
                continue
            data = {}
            for entry in g.get("files") or []:
                key, _, fpath = entry.rpartition("=") if "=" in entry else ("", "", entry)
                key = key or os.path.basename(fpath)
                full = os.path.normpath(os.path.join(base, fpath))
                if not full.startswith(base + os.sep):
                    self.err(
                        f"{where}: configMapGenerator {name} reads {fpath}, outside the "
                        "kustomization root (kustomize refuses it without --load-restrictor)"
                    )
                    continue
                if not os.path.isfile(full):
                    self.err(f"{where}: configMapGenerator {name} file {fpath} does not exist")
                    continue
                with open(full, encoding="utf-8") as fh:
                    data[key] = fh.read()
            for entry in g.get("literals") or []:
                key, _, value = entry.partition("=")
                data[key] = value
            if g.get("envs"):
                self.notes.append(f"{where}: configMapGenerator {name} envs not checked")
            opts = {**gen_opts, **(g.get("options") or {})}
            labels = {**(gen_opts.get("labels") or {}), **((g.get("options") or {}).get("labels") or {})}
            doc = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "labels": labels},
                "data": data,
                "_generated": not opts.get("disableNameSuffixHash", False),
            }
            self.objects.append((where, doc))

    # ------------------------------------------------------ schema validation

    def check_schemas(self):
        """Every object against its schema. Runs before the other checks annotate the objects."""
        try:
            import jsonschema
            import kubernetes_validate
        except ImportError as e:
            self.err(
                f"schema validation needs {' '.join(VALIDATOR_PINS)} from PyPI "
                f"(scripts/setup.sh installs them): {e}"
            )
            self.kv = None
            return
        self.kv = kubernetes_validate
        self.load_crd_schemas(jsonschema)
        for f, d in self.objects:
            problems, _ = self.schema_problems(d)
            for p in problems:
                self.err(f"{f}: {self.ident(d)}: {p}")
                self.reported.add((self.ident(d), p))
        used = {shown for shown, n in self.schema_counts.items() if n}
        for _, shown in self.crd_validators.values():
            if shown not in used:
                self.notes.append(f"{self.rel(os.path.join(self.root, shown))}: no object here uses this schema")

    def load_crd_schemas(self, jsonschema):
        sdir = os.path.join(self.root, SCHEMA_DIR)
        if not os.path.isdir(sdir):
            return
        cls = crd_validator_class(jsonschema)
        for fn in sorted(os.listdir(sdir)):
            if not fn.endswith(".json"):
                continue
            path = os.path.join(sdir, fn)
            shown = self.rel(path)
            try:
                with open(path, encoding="utf-8") as fh:
                    schema = json.load(fh)
            except (OSError, ValueError) as e:
                self.err(f"{shown}: not valid JSON: {e}")
                continue
            # (Checked against the meta-schema when --import-crd writes it: that takes a second.)
            props = schema.get("properties") or {}
            api = (props.get("apiVersion") or {}).get("const")
            kind = (props.get("kind") or {}).get("const")
            if not api or not kind:
                self.err(f"{shown}: properties.apiVersion and properties.kind need a const")
                continue
            if fn != crd_schema_name(api, kind):
                self.err(f"{shown}: holds {kind} {api}; name it {crd_schema_name(api, kind)}")
            comment = schema.get("$comment") or ""
            if not re.search(r"\bcommit [0-9a-f]{7,40}\b", comment) or "license" not in comment.lower():
                self.err(f"{shown}: $comment must name the source (repository, path, version, commit) and its license")
            if (api, kind) in self.crd_validators:
                self.err(f"{shown}: a second schema for {kind} {api}")
            self.crd_validators[(api, kind)] = (cls(schema), f"{SCHEMA_DIR}/{fn}")

    def schema_problems(self, doc):
        """(problems, what it was validated against) for one object; memoized."""
        doc = {k: v for k, v in doc.items() if not k.startswith("_")}
        meta = dict(doc.get("metadata") or {})
        meta.pop("namespace", None)  # kustomize sets it; a plain string either way
        key = json.dumps({**doc, "metadata": meta}, sort_keys=True, default=str)
        if key in self.schema_cache:
            return self.schema_cache[key]
        api, kind = doc.get("apiVersion"), doc.get("kind")
        crd = self.crd_validators.get((api, kind))
        if crd is not None:
            validator, against = crd
            try:
                errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
            except Exception as e:  # a broken schema file: jsonschema raises SchemaError, UnknownType, ...
                errors = []
                problems = [f"{against} could not be applied ({type(e).__name__}: {short(e)}); re-import it with --import-crd"]
            else:
                problems = []
            problems += [f"{fmt_path(e.absolute_path)}: {short(e.message)} ({against})" for e in errors]
            # metadata is ObjectMeta for every kind: check it with the Kubernetes schema.
            problems += self.k8s_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata")})
        else:
            against = f"Kubernetes {K8S_VERSION}"
            problems = self.k8s_problems(doc)
        self.schema_counts[against] = self.schema_counts.get(against, 0) + 1
        self.schema_cache[key] = (problems, against)
        return problems, against

    def k8s_problems(self, doc):
        kv = self.kv
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            return [f"{fmt_path(e.path)}: {short(e.message)} (Kubernetes {K8S_VERSION} schema, strict)"]
        except kv.SchemaNotFoundError:
            return [
                f"no schema for {doc.get('kind')} {doc.get('apiVersion')}: not a Kubernetes {K8S_VERSION} "
                f"kind, and {SCHEMA_DIR}/ has no CRD schema for it (add one with --import-crd)"
            ]
        return []

    # ------------------------------------------------------- kustomize render

    def check_render(self):
        """kubectl kustomize renders the root alone and with each Component; the output is
        what the files say (same objects, namespace set) and valid against the schemas."""
        tool = shutil.which("kubectl") or shutil.which("kustomize")
        if tool is None:
            self.notes.append("neither kubectl nor kustomize found: the kustomize render was not checked")
            return
        cmd = [tool, "kustomize"] if os.path.basename(tool) == "kubectl" else [tool, "build"]
        comps = [os.path.dirname(p) for p, k in self.kustomizations if k.get("kind") == "Component"]

        def owner(f):
            full = os.path.normpath(os.path.join(REPO, f))
            return next((c for c in comps if full == os.path.join(c, "kustomization.yaml") or full.startswith(c + os.sep)), None)

        expected = {}
        for f, d in self.objects:
            expected.setdefault(owner(f), []).append(d)
        label = " ".join([os.path.basename(cmd[0])] + cmd[1:])
        self.render(cmd, self.root, f"{label} {self.rel(self.root)}", expected.get(None, []))
        root_k = next((k for p, k in self.kustomizations if os.path.dirname(p) == self.root), None)
        if root_k is None:
            return
        for comp in comps:
            # As README.md says to enable it: listed under the root's `components:`, so the
            # root's namespace and patches apply to it too. Rendered from a copy of the tree.
            with tempfile.TemporaryDirectory() as tmp:
                copy = os.path.join(tmp, "root")
                shutil.copytree(self.root, copy, ignore=lambda d, names: [SCHEMA_DIR] if d == self.root else [])
                k = dict(root_k)
                k["components"] = list(k.get("components") or []) + [os.path.relpath(comp, self.root)]
                with open(os.path.join(copy, "kustomization.yaml"), "w", encoding="utf-8") as fh:
                    yaml.safe_dump(k, fh, sort_keys=False)
                self.render(
                    cmd, copy, f"{label} with components: [{os.path.relpath(comp, self.root)}]",
                    expected.get(None, []) + expected.get(comp, []),
                )

    def render(self, cmd, path, what, want):
        try:
            out = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.err(f"{what}: {' '.join(cmd)} did not run: {e}")
            return
        if out.returncode != 0:
            lines = [re.sub(r"^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] ", "", l) for l in out.stderr.strip().splitlines()]
            msg = " | ".join(lines[-3:])
            self.err(f"{what}: render failed: {msg}")
            return
        try:
            docs = [d for d in yaml.load_all(out.stdout, Loader=YAML_LOADER) if d]
        except yaml.YAMLError as e:
            self.err(f"{what}: rendered output is not YAML: {e}")
            return
        self.renders.append((what, len(docs)))
        names = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
        wanted = set()
        for d in want:
            name = d["metadata"]["name"]
            if d.get("_generated"):  # kustomize appends a content hash
                name = next((n for k, n in names if k == d["kind"] and re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", n or "")), name)
            wanted.add((d["kind"], name))
        for k, n in sorted(names - wanted, key=str):
            self.err(f"{what}: renders {k}/{n}, which no listed file defines")
        for k, n in sorted(wanted - names, key=str):
            self.err(f"{what}: does not render {k}/{n}")
        for d in docs:
            ident = self.ident(d)
            ns = (d.get("metadata") or {}).get("namespace")
            if d.get("kind") not in CLUSTER_SCOPED and self.namespace and ns != self.namespace:
                self.err(f"{what}: {ident} is rendered in namespace {ns}, not {self.namespace}")
            if self.kv is not None:
                problems, _ = self.schema_problems(d)
                for p in problems:
                    if (ident, p) not in self.reported:  # not already reported for its file
                        self.err(f"{what}: rendered {ident}: {p}")
                        self.reported.add((ident, p))

    # --------------------------------------------------------- repo copies

    def check_copies(self):
        for copy, original in COPIES.items():
            c, o = os.path.join(self.root, copy), os.path.join(REPO, original)
            shown = self.rel(c)
            if not os.path.exists(o):
                continue
            if not os.path.exists(c):
                self.err(f"{shown} is missing: cp {original} {shown}")
                continue
            with open(c, "rb") as a, open(o, "rb") as b:
                if a.read() != b.read():
                    self.err(f"{shown} differs from {original}: cp {original} {shown}")

    # ------------------------------------------------------- ConfigMap TOML

    def configmaps(self):
        return {d["metadata"]["name"]: d for _, d in self.by_kind("ConfigMap")}

    def check_tomls(self):
        self.tomls = {}  # (configmap, key) -> parsed
        for f, d in self.by_kind("ConfigMap"):
            for key, text in (d.get("data") or {}).items():
                if key.endswith(".json"):
                    try:
                        json.loads(text)
                    except json.JSONDecodeError as e:
                        self.err(f"{f}: {self.ident(d)} key {key} is not valid JSON: {e}")
                if not key.endswith(".toml"):
                    continue
                self.toml_count += 1
                try:
                    parsed = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    self.err(f"{f}: {self.ident(d)} key {key} is not valid TOML: {e}")
                    continue
                self.tomls[(d["metadata"]["name"], key)] = parsed
                stem = key[: -len(".toml")]
                kind = profile_kind(parsed)
                if kind:
                    if parsed.get("name") != stem:
                        self.err(f"{f}: {self.ident(d)} key {key} holds profile name {parsed.get('name')!r}")
                    repo_file = os.path.join(REPO, "profiles", kind, key)
                    if os.path.isfile(repo_file):
                        with open(repo_file, "rb") as fh:
                            if tomllib.load(fh) != parsed:
                                self.err(
                                    f"{f}: {self.ident(d)} key {key} differs from "
                                    f"profiles/{kind}/{key}: copy it again"
                                )
        # The dashboard ConfigMap for the Grafana sidecar.
        dash = [
            d for _, d in self.by_kind("ConfigMap")
            if any(k.endswith(".json") and '"panels"' in v for k, v in (d.get("data") or {}).items())
        ]
        if not dash:
            self.err("no ConfigMap holds the Grafana dashboard")
        for d in dash:
            if str((d["metadata"].get("labels") or {}).get("grafana_dashboard")) != "1":
                self.err(f"{self.ident(d)} holds a dashboard but lacks label grafana_dashboard: \"1\"")

    # ---------------------------------------------------------- workloads

    def deployments(self):
        return [(f, d) for f, d in self.by_kind("Deployment")]

    @staticmethod
    def pod_labels(dep):
        return ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}

    @staticmethod
    def pod_spec(dep):
        return ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}

    @staticmethod
    def subcommand(container):
        cmd, args = container.get("command") or [], container.get("args") or []
        tokens = [str(t) for t in cmd + args]
        if cmd and posixpath.basename(str(cmd[0])) == "switchyard":
            return tokens[1] if len(tokens) > 1 else None
        return str(args[0]) if args else None

    def switchyard_containers(self, dep):
        return [c for c in self.pod_spec(dep).get("containers") or [] if self.subcommand(c) in ("serve", "epp")]

    def role(self, dep):
        subs = {self.subcommand(c) for c in self.pod_spec(dep).get("containers") or []}
        return "epp" if "epp" in subs else "serve" if "serve" in subs else None

    def selects(self, match, labels):
        return bool(match) and all(labels.get(k) == v for k, v in match.items())

    def selected_deployments(self, match):
        return [d for _, d in self.deployments() if self.selects(match, self.pod_labels(d))]

    @staticmethod
    def container_ports(dep):
        ports = {}
        for c in Checker.pod_spec(dep).get("containers") or []:
            for p in c.get("ports") or []:
                ports[p.get("containerPort")] = p.get("name")
        return ports

    def port_exists(self, dep, port, container=None):
        conts = [container] if container else self.pod_spec(dep).get("containers") or []
        for c in conts:
            for p in c.get("ports") or []:
                if port == p.get("containerPort") or (isinstance(port, str) and port == p.get("name")):
                    return True
        return False

    def check_deployments(self):
        deps = self.deployments()
        for f, d in deps:
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not sel:
                self.err(f"{f}: {self.ident(d)} has no spec.selector.matchLabels")
            elif not self.selects(sel, self.pod_labels(d)):
                self.err(f"{f}: {self.ident(d)} selector {sel} does not match its pod template labels")
            for _, other in deps:
                if other is not d and sel and self.selects(sel, self.pod_labels(other)):
                    self.err(f"{f}: {self.ident(d)} selector {sel} also matches {self.ident(other)}'s pods")
            for c in self.pod_spec(d).get("containers") or []:
                self.check_container(f, d, c)
            for v in self.pod_spec(d).get("volumes") or []:
                self.check_volume_refs(f, d, v)

    def check_volume_refs(self, f, dep, vol):
        cms = self.configmaps()
        sources = []
        if "configMap" in vol:
            sources.append(vol["configMap"])
        for s in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in s:
                sources.append(s["configMap"])
        for s in sources:
            cm = cms.get(s.get("name"))
            if cm is None:
                if not s.get("optional"):
                    self.err(f"{f}: {self.ident(dep)} volume {vol.get('name')} names ConfigMap {s.get('name')}, not defined here")
                continue
            for item in s.get("items") or []:
                if item.get("key") not in (cm.get("data") or {}):
                    self.err(f"{f}: {self.ident(dep)} volume {vol.get('name')} wants key {item.get('key')} of ConfigMap {s.get('name')}, which has none")
        pvc = vol.get("persistentVolumeClaim")
        if pvc and self.find("PersistentVolumeClaim", pvc.get("claimName")) is None:
            self.err(f"{f}: {self.ident(dep)} volume {vol.get('name')} claims PVC {pvc.get('claimName')}, not defined here")

    def vfs(self, dep, container):
        """Mount path -> what is there: ('files', {relpath: text or None}) or ('dir', volume)."""
        vols = {v.get("name"): v for v in self.pod_spec(dep).get("volumes") or []}
        cms = self.configmaps()
        mounts = []
        for m in container.get("volumeMounts") or []:
            v = vols.get(m.get("name"))
            if v is None:
                self.err(f"{self.ident(dep)} container {container.get('name')} mounts volume {m.get('name')}, which the pod does not define")
                continue
            files = None
            srcs = []
            if "configMap" in v:
                srcs.append(("configMap", v["configMap"]))
            elif "secret" in v:
                srcs.append(("secret", v["secret"]))
            elif "projected" in v:
                for s in v["projected"].get("sources") or []:
                    for kind in ("configMap", "secret"):
                        if kind in s:
                            srcs.append((kind, s[kind]))
            if srcs:
                files = {}
                for kind, s in srcs:
                    data = (cms.get(s.get("name")) or {}).get("data") or {} if kind == "configMap" else {}
                    items = s.get("items")
                    if items:
                        for it in items:
                            files[posixpath.normpath(it.get("path"))] = data.get(it.get("key"))
                    else:
                        for key, text in data.items():
                            files[key] = text
            mpath = posixpath.normpath(m.get("mountPath", "/"))
            if m.get("subPath") and files is not None:
                files = {"": files.get(posixpath.normpath(m["subPath"]))}
            mounts.append((mpath, ("files", files) if files is not None else ("dir", m.get("name"))))
        return mounts

    @staticmethod
    def lookup(mounts, path):
        """What `path` is in the container: ('file', text), ('dir', volume), ('tree', None) or None."""
        path = posixpath.normpath(path)
        best = None
        for mpath, what in mounts:
            if path == mpath or path.startswith(mpath.rstrip("/") + "/"):
                if best is None or len(mpath) > len(best[0]):
                    best = (mpath, what)
        if best is None:
            return None
        mpath, (kind, payload) = best
        if kind == "dir":
            return ("dir", payload)
        rel = posixpath.relpath(path, mpath) if path != mpath else ""
        if rel == ".":
            rel = ""
        if rel in payload:
            return ("file", payload[rel])
        if any(k.startswith(rel + "/") or rel == "" for k in payload):
            return ("tree", None)
        return None

    def check_container(self, f, dep, c):
        sub = self.subcommand(c)
        if sub not in ("serve", "epp"):
            return
        who = f"{f}: {self.ident(dep)} container {c.get('name')}"
        tokens = [str(t) for t in (c.get("command") or []) + (c.get("args") or [])]
        flags = parse_flags(tokens)
        ports = {p.get("containerPort") for p in c.get("ports") or []}
        for flag in ADDR_FLAGS:
            if flag in flags:
                port = addr_port(flags[flag])
                if port is None:
                    self.err(f"{who}: {flag} {flags[flag]} is not HOST:PORT")
                elif port not in ports:
                    self.err(f"{who}: {flag} {flags[flag]} but the container exposes no port {port}")
        if sub == "epp":
            for flag in ("--grpc-addr", "--health-addr", "--metrics-addr"):
                if flag not in flags:
                    self.err(f"{who}: `switchyard epp` without {flag}")
        # Probes.
        routes = http_routes()
        health = addr_port(flags.get("--health-addr", "")) if "--health-addr" in flags else None
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if not probe:
                if probe_name != "startupProbe":
                    self.err(f"{who}: no {probe_name}")
                continue
            for kind in ("httpGet", "tcpSocket", "grpc"):
                if kind in probe:
                    port = probe[kind].get("port")
                    if not self.port_exists(dep, port, c):
                        self.err(f"{who}: {probe_name} {kind} port {port} is not a container port")
            if "httpGet" in probe and sub == "serve" and routes:
                path = probe["httpGet"].get("path", "/")
                if path not in routes:
                    self.err(f"{who}: {probe_name} path {path} is not a route of server/src/http.rs")
            if sub == "epp":
                g = probe.get("grpc")
                want = {"readinessProbe": "readiness", "livenessProbe": "liveness"}.get(probe_name)
                if g is None:
                    self.err(f"{who}: {probe_name} is not a gRPC probe")
                    continue
                if health is not None and g.get("port") != health:
                    self.err(f"{who}: {probe_name} asks port {g.get('port')}, --health-addr is {health}")
                if want and g.get("service") != want:
                    self.err(f"{who}: {probe_name} asks gRPC service {g.get('service')!r}, expected {want!r}")
        # The config file and everything it names.
        if "--config" not in flags:
            self.err(f"{who}: `switchyard {sub}` without --config FILE")
            return
        cfg_path = flags["--config"]
        if not cfg_path.startswith("/"):
            self.err(f"{who}: --config {cfg_path} is relative (to the image's working directory); mount it at an absolute path")
            return
        mounts = self.vfs(dep, c)
        found = self.lookup(mounts, cfg_path)
        if found is None or found[0] == "tree":
            self.err(f"{who}: --config {cfg_path} is not mounted (no volumeMount provides it)")
            return
        if found[0] == "dir":
            self.notes.append(f"{who}: --config {cfg_path} lies on volume {found[1]}; its content is not checked")
            return
        if found[1] is None:
            self.err(f"{who}: --config {cfg_path} is mounted from a key that does not exist")
            return
        try:
            cfg = tomllib.loads(found[1])
        except tomllib.TOMLDecodeError as e:
            self.err(f"{who}: {cfg_path} is not valid TOML: {e}")
            return
        dep.setdefault("_configs", []).append((c.get("name"), cfg_path, cfg, mounts))
        base = posixpath.dirname(cfg_path)
        prof_dir = posixpath.normpath(posixpath.join(base, cfg.get("profiles_dir", "profiles")))

        def need(path, what):
            hit = self.lookup(mounts, path)
            if hit is None or hit[0] == "tree":
                self.err(f"{who}: {cfg_path} needs {what} at {path}, which is not mounted")
                return None
            if hit[0] == "file" and hit[1] is None:
                self.err(f"{who}: {what} at {path} is mounted from a key that does not exist")
                return None
            return hit

        spec = (cfg.get("model") or {}).get("spec")
        if spec:
            need(posixpath.join(prof_dir, "models", f"{spec}.toml"), f"model spec {spec}")
        mpath = (cfg.get("model") or {}).get("path")
        if mpath:
            need(posixpath.normpath(posixpath.join(base, mpath)), "the model directory")
        limits = (c.get("resources") or {}).get("limits") or {}
        requests = (c.get("resources") or {}).get("requests") or {}
        gpu_devices = {"cuda": [], "rocm": []}
        for dev in cfg.get("devices") or []:
            name = dev.get("profile")
            hit = need(posixpath.join(prof_dir, "devices", f"{name}.toml"), f"device profile {name}")
            backend = dev.get("backend")
            if hit and hit[0] == "file":
                try:
                    vendor = tomllib.loads(hit[1]).get("vendor")
                except tomllib.TOMLDecodeError:
                    vendor = None
                want = BACKEND_VENDOR.get(backend)
                if want and vendor and vendor != want:
                    self.err(f"{who}: device {dev.get('id')} runs backend {backend} on profile {name} of vendor {vendor}")
            if backend in gpu_devices:
                gpu_devices[backend].append(dev)
        for backend, devs in gpu_devices.items():
            res = GPU_RESOURCE[backend]
            have = int(limits.get(res, 0) or 0)
            if devs and have < len(devs):
                self.err(f"{who}: {len(devs)} {backend} device(s) but resources.limits {res} is {have}")
            for dev in devs:
                if int(dev.get("ordinal", 0)) >= max(have, 1):
                    self.err(f"{who}: device {dev.get('id')} ordinal {dev.get('ordinal')} but the pod gets {have} {res}")
            if not devs and (limits.get(res) or requests.get(res)):
                self.err(f"{who}: requests {res} but runs no {backend} device")
        for ep in cfg.get("endpoints") or []:
            if ep.get("profile"):
                need(posixpath.join(prof_dir, "devices", f"{ep['profile']}.toml"), f"endpoint {ep.get('id')}'s profile {ep['profile']}")

    # ------------------------------------------------- switchyard.toml files

    def check_switchyard_configs(self):
        schema = rust_schema()
        if schema is None:
            self.notes.append("config schema: Config not found in scheduler/src/config; schema check skipped")
        for (cm, key), parsed in sorted(self.tomls.items()):
            if "model" not in parsed:
                continue
            where = f"ConfigMap/{cm} key {key}"
            if schema:
                for problem in validate(schema, "Config", parsed, ""):
                    self.err(f"{where}: {problem}")
            for problem in semantic_config_problems(parsed):
                self.err(f"{where}: {problem}")

    # ---------------------------------------------------------- inferencepool

    def check_inferencepool(self):
        pools = self.by_kind("InferencePool")
        if not pools:
            self.err("no InferencePool")
            return
        serve_deps = [d for _, d in self.deployments() if self.role(d) == "serve"]
        epp_deps = [d for _, d in self.deployments() if self.role(d) == "epp"]
        if not serve_deps:
            self.err("no Deployment runs `switchyard serve`")
        if not epp_deps:
            self.err("no Deployment runs `switchyard epp`")
        self.pool_members = []
        for f, ip in pools:
            who = f"{f}: {self.ident(ip)}"
            if ip["apiVersion"] != "inference.networking.k8s.io/v1":
                self.err(f"{who}: apiVersion {ip['apiVersion']}, expected inference.networking.k8s.io/v1")
            spec = ip.get("spec") or {}
            sel = spec.get("selector") or {}
            match = sel.get("matchLabels") or {}
            if not match:
                self.err(f"{who}: spec.selector.matchLabels is missing or empty")
            extra = set(sel) - {"matchLabels"}
            if extra:
                self.err(f"{who}: spec.selector has {sorted(extra)}; v1 supports matchLabels only")
            tports = spec.get("targetPorts")
            numbers = []
            if not isinstance(tports, list) or not 1 <= len(tports) <= 8:
                self.err(f"{who}: spec.targetPorts must list 1 to 8 ports")
            else:
                for p in tports:
                    n = p.get("number") if isinstance(p, dict) else None
                    if not isinstance(n, int) or not 1 <= n <= 65535 or set(p) != {"number"}:
                        self.err(f"{who}: targetPorts entry {p!r} is not {{number: 1..65535}}")
                    numbers.append(n)
                if len(set(numbers)) != len(numbers):
                    self.err(f"{who}: targetPorts numbers repeat")
            members = self.selected_deployments(match) if match else []
            self.pool_members = members
            got = {self.ident(d) for d in members}
            want = {self.ident(d) for d in serve_deps}
            if got != want:
                if got - want:
                    self.err(f"{who}: selector {match} also matches {sorted(got - want)}, which are not pool nodes")
                if want - got:
                    self.err(f"{who}: selector {match} misses the pool Deployments {sorted(want - got)}")
            for d in members:
                for n in numbers:
                    if not self.port_exists(d, n):
                        self.err(f"{who}: target port {n} is not a container port of {self.ident(d)}")
            ref = spec.get("endpointPickerRef")
            if not isinstance(ref, dict):
                self.err(f"{who}: spec.endpointPickerRef is missing")
                continue
            if ref.get("failureMode") not in FAILURE_MODES:
                self.err(f"{who}: endpointPickerRef.failureMode is {ref.get('failureMode')!r}, expected FailOpen or FailClose")
            if ref.get("kind", "Service") != "Service" or ref.get("group", "") != "":
                self.err(f"{who}: endpointPickerRef must name a core Service")
                continue
            port = (ref.get("port") or {}).get("number")
            if not isinstance(port, int):
                self.err(f"{who}: endpointPickerRef.port.number is required for a Service")
            svc = self.find("Service", ref.get("name"))
            if svc is None:
                self.err(f"{who}: endpointPickerRef names Service {ref.get('name')}, not defined here")
                continue
            sports = [p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port]
            if not sports:
                self.err(f"{who}: Service {ref.get('name')} has no port {port}")
                continue
            sp = sports[0]
            if sp.get("appProtocol") != "http2":
                self.err(f"Service/{ref.get('name')} port {port} needs appProtocol: http2 (ext_proc is gRPC)")
            picked = self.selected_deployments((svc.get("spec") or {}).get("selector") or {})
            if not picked or any(self.role(d) != "epp" for d in picked):
                self.err(f"Service/{ref.get('name')} must select the `switchyard epp` pods, selects {sorted(self.ident(d) for d in picked)}")
            target = sp.get("targetPort", port)
            for d in picked:
                for c in self.switchyard_containers(d):
                    grpc = addr_port(parse_flags([str(t) for t in (c.get("command") or []) + (c.get("args") or [])]).get("--grpc-addr", ""))
                    tnum = target if isinstance(target, int) else next(
                        (p.get("containerPort") for p in c.get("ports") or [] if p.get("name") == target), None
                    )
                    if tnum is None:
                        self.err(f"Service/{ref.get('name')} targetPort {target} is not a port of {self.ident(d)}")
                    elif grpc is not None and grpc != tnum:
                        self.err(f"{self.ident(d)}: --grpc-addr port {grpc} but Service/{ref.get('name')} sends {port} to {tnum}")

    # --------------------------------------------------------------- services

    def check_services(self):
        for f, s in self.by_kind("Service"):
            spec = s.get("spec") or {}
            who = f"{f}: {self.ident(s)}"
            sel = spec.get("selector") or {}
            if not sel:
                self.err(f"{who}: has no selector")
                continue
            deps = self.selected_deployments(sel)
            if not deps:
                self.err(f"{who}: selector {sel} matches no Deployment's pods")
            for p in spec.get("ports") or []:
                tp = p.get("targetPort", p.get("port"))
                for d in deps:
                    if not self.port_exists(d, tp):
                        self.err(f"{who}: targetPort {tp} is not a container port of {self.ident(d)}")

    def headless(self):
        return {s["metadata"]["name"]: s for _, s in self.by_kind("Service") if (s.get("spec") or {}).get("clusterIP") == "None"}

    def check_endpoints(self):
        """The EPP's [[endpoints]]: profiles exist, DNS names are headless Services of the pool."""
        headless = self.headless()
        profile_cms = {
            key[: -len(".toml")]
            for (cm, key), parsed in self.tomls.items()
            if profile_kind(parsed) == "devices"
        }
        covered = set()
        epp_deps = [d for _, d in self.deployments() if self.role(d) == "epp"]
        configs = [(d, cfg) for d in epp_deps for _, _, cfg, _ in d.get("_configs", [])]
        if epp_deps and not configs:
            self.err("the EPP's config could not be read, so its [[endpoints]] were not checked")
        for dep, cfg in configs:
            eps = cfg.get("endpoints") or []
            if not eps:
                self.err(f"{self.ident(dep)}: its config lists no [[endpoints]]")
            for ep in eps:
                who = f"{self.ident(dep)} endpoint {ep.get('id')}"
                prof = ep.get("profile")
                if not prof:
                    self.err(f"{who}: no profile (each pool's endpoint names its device profile)")
                elif not os.path.isfile(os.path.join(REPO, "profiles", "devices", f"{prof}.toml")) and prof not in profile_cms:
                    self.err(f"{who}: profile {prof} is neither in profiles/devices/ nor a profile file in a ConfigMap")
                try:
                    host, port = url_authority(ep.get("url", ""))
                except ValueError as e:
                    self.err(f"{who}: {e}")
                    continue
                if ep.get("discovery", "static") != "dns":
                    self.notes.append(f"{who}: static URL {ep.get('url')} not matched to a Service")
                    continue
                svc_name, ns = split_service_host(host)
                if ns and self.namespace and ns != self.namespace:
                    self.err(f"{who}: URL host {host} is in namespace {ns}, the manifests in {self.namespace}")
                svc = headless.get(svc_name)
                if svc is None:
                    self.err(f"{who}: URL host {host} is not a headless Service (clusterIP: None) defined here")
                    continue
                if port not in [p.get("port") for p in (svc.get("spec") or {}).get("ports") or []]:
                    self.err(f"{who}: URL port {port} is not a port of Service/{svc_name}")
                deps = self.selected_deployments((svc.get("spec") or {}).get("selector") or {})
                self.endpoint_deployments[ep.get("id")] = [d["metadata"]["name"] for d in deps]
                for d in deps:
                    covered.add(self.ident(d))
                    if d not in self.pool_members:
                        self.err(f"{who}: Service/{svc_name} selects {self.ident(d)}, which the InferencePool does not")
                    if ep.get("engine") == "switchyard" and prof:
                        node_profiles = {
                            dev.get("profile") for _, _, c, _ in d.get("_configs", []) for dev in c.get("devices") or []
                        }
                        if node_profiles and prof not in node_profiles:
                            self.err(f"{who}: profile {prof}, but {self.ident(d)}'s devices use {sorted(node_profiles)}")
        for d in self.pool_members:
            if configs and self.ident(d) not in covered:
                self.err(f"{self.ident(d)} is in the InferencePool but no EPP endpoint reaches it")

    # ------------------------------------------------------------ monitoring

    def check_podmonitors(self):
        scraped = set()
        for f, pm in self.by_kind("PodMonitor"):
            who = f"{f}: {self.ident(pm)}"
            if pm["apiVersion"] != "monitoring.coreos.com/v1":
                self.err(f"{who}: apiVersion {pm['apiVersion']}, expected monitoring.coreos.com/v1")
            spec = pm.get("spec") or {}
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            deps = self.selected_deployments(match)
            if not deps:
                self.err(f"{who}: selector {match} matches no Deployment's pods")
            eps = spec.get("podMetricsEndpoints") or []
            if not eps:
                self.err(f"{who}: no podMetricsEndpoints")
            for ep in eps:
                port = ep.get("port")
                hit = [d for d in deps if self.port_exists(d, port)]
                if not hit:
                    self.err(f"{who}: no selected pod has a port named {port}")
                if ep.get("path", "/metrics") != "/metrics":
                    self.err(f"{who}: path {ep.get('path')}; Switchyard serves /metrics")
                scraped.update(self.ident(d) for d in hit)
        for _, d in self.deployments():
            if self.role(d) and self.ident(d) not in scraped:
                self.err(f"{self.ident(d)} is scraped by no PodMonitor")

    def check_routes(self):
        for f, r in self.by_kind("HTTPRoute"):
            who = f"{f}: {self.ident(r)}"
            spec = r.get("spec") or {}
            for p in spec.get("parentRefs") or []:
                if p.get("kind", "Gateway") == "Gateway":
                    gw = self.find("Gateway", p.get("name"))
                    if gw is None:
                        self.notes.append(f"{who}: parent Gateway {p.get('name')} is not defined here")
                    elif p.get("sectionName") and p["sectionName"] not in [
                        lst.get("name") for lst in (gw.get("spec") or {}).get("listeners") or []
                    ]:
                        self.err(f"{who}: Gateway {p.get('name')} has no listener {p['sectionName']}")
            pool_refs = 0
            for rule in spec.get("rules") or []:
                for b in rule.get("backendRefs") or []:
                    if b.get("kind") == "InferencePool":
                        pool_refs += 1
                        if b.get("group") != "inference.networking.k8s.io":
                            self.err(f"{who}: InferencePool backendRef group {b.get('group')!r}, expected inference.networking.k8s.io")
                        if self.find("InferencePool", b.get("name")) is None:
                            self.err(f"{who}: backendRef InferencePool {b.get('name')} is not defined here")
            if not pool_refs:
                self.err(f"{who}: no backendRef is an InferencePool")

    # ------------------------------------------------------------ autoscaling

    def check_autoscalers(self):
        """HPAs and KEDA ScaledObjects scale Deployments defined here, one autoscaler per
        Deployment in any one render, and those on the EPP's desired-replicas gauge name a
        pool that is the EPP endpoint of the Deployment they scale, with the target that makes
        the replica count equal the gauge."""
        comps = [os.path.dirname(p) for p, k in self.kustomizations if k.get("kind") == "Component"]

        def owner(f):
            full = os.path.normpath(os.path.join(REPO, f))
            return next((self.rel(c) for c in comps if full.startswith(c + os.sep)), None)

        scaled = {}  # Deployment name -> [(component or None, who)]
        uses_gauge = []
        for f, h in self.by_kind("HorizontalPodAutoscaler"):
            who = f"{f}: {self.ident(h)}"
            spec = h.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind") != "Deployment" or self.find("Deployment", ref.get("name")) is None:
                self.err(f"{who} scales {ref.get('kind')}/{ref.get('name')}, not a Deployment defined here")
            scaled.setdefault(ref.get("name"), []).append((owner(f), who))
            lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                self.err(f"{who}: minReplicas {lo} > maxReplicas {hi}")
            for m in spec.get("metrics") or []:
                ext = m.get("external") or {}
                metric = ext.get("metric") or {}
                if m.get("type") != "External" or metric.get("name") != DESIRED_GAUGE:
                    continue
                uses_gauge.append(who)
                sel = metric.get("selector") or {}
                pool = (sel.get("matchLabels") or {}).get("pool")
                if set(sel) - {"matchLabels"} or set(sel.get("matchLabels") or {}) != {"pool"}:
                    self.err(f"{who}: the {DESIRED_GAUGE} selector must be matchLabels {{pool: <endpoint id>}}, is {sel}")
                self.check_pool_target(who, pool, ref.get("name"))
                t = ext.get("target") or {}
                if t.get("type") != "AverageValue" or quantity(t.get("averageValue")) != 1:
                    self.err(
                        f"{who}: {DESIRED_GAUGE} needs target {{type: AverageValue, averageValue: \"1\"}} "
                        f"(desired replicas = ceil(gauge / 1)), has {t}"
                    )
        for f, so in self.by_kind("ScaledObject"):
            who = f"{f}: {self.ident(so)}"
            spec = so.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            kind, api = ref.get("kind", "Deployment"), ref.get("apiVersion", "apps/v1")
            if kind != "Deployment" or api != "apps/v1" or self.find("Deployment", ref.get("name")) is None:
                self.err(f"{who} scales {api} {kind}/{ref.get('name')}, not a Deployment defined here")
            scaled.setdefault(ref.get("name"), []).append((owner(f), who))
            lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                self.err(f"{who}: minReplicaCount {lo} > maxReplicaCount {hi}")
            for i, t in enumerate(spec.get("triggers") or []):
                tw = f"{who} trigger {i} ({t.get('type')})"
                mtype = t.get("metricType", "AverageValue")
                if mtype not in KEDA_METRIC_TYPES:
                    self.err(f"{tw}: metricType {mtype!r}, KEDA takes {', '.join(sorted(KEDA_METRIC_TYPES))}")
                if t.get("type") != "prometheus":
                    continue
                md = t.get("metadata") or {}
                missing = [k for k in ("serverAddress", "query", "threshold") if not md.get(k)]
                if missing:
                    self.err(f"{tw}: metadata lacks {', '.join(missing)}")
                    continue
                if not re.match(r"https?://[^/\s]+", md["serverAddress"]):
                    self.err(f"{tw}: serverAddress {md['serverAddress']!r} is not an http(s) URL")
                threshold = quantity(md["threshold"])
                if threshold is None:
                    self.err(f"{tw}: threshold {md['threshold']!r} is not a number")
                query = md["query"]
                if DESIRED_GAUGE not in query:
                    continue
                uses_gauge.append(who)
                pools = re.findall(r'\bpool\s*=\s*"([^"]*)"', query)
                if len(pools) != 1:
                    self.err(f"{tw}: the query must select one pool, pool=\"<endpoint id>\": {query}")
                else:
                    self.check_pool_target(tw, pools[0], ref.get("name"))
                for ns in re.findall(r'\bnamespace\s*=\s*"([^"]*)"', query):
                    if self.namespace and ns != self.namespace:
                        self.err(f"{tw}: the query asks namespace {ns}, the manifests are in {self.namespace}")
                if mtype != "AverageValue" or threshold != 1:
                    self.err(
                        f"{tw}: {DESIRED_GAUGE} needs metricType AverageValue and threshold \"1\" "
                        f"(desired replicas = ceil(gauge / 1)), has {mtype} and {md['threshold']!r}"
                    )
                if str(md.get("ignoreNullValues", "true")).lower() != "false":
                    self.err(
                        f"{tw}: set ignoreNullValues: \"false\"; otherwise a missing gauge (EPP down) "
                        "reads as 0 and KEDA shrinks the pool to minReplicaCount"
                    )
        for dep, by in sorted(scaled.items(), key=lambda kv: str(kv[0])):
            for i, (c1, w1) in enumerate(by):
                for c2, w2 in by[i + 1:]:
                    if c1 is None or c2 is None or c1 == c2:
                        self.err(f"{w1} and {w2} both scale Deployment/{dep} in the same render")
        if uses_gauge:
            epp_cfgs = [cfg for _, d in self.deployments() if self.role(d) == "epp" for _, _, cfg, _ in d.get("_configs", [])]
            if epp_cfgs and not any((cfg.get("autoscale") or {}).get("enabled") is True for cfg in epp_cfgs):
                self.notes.append(
                    f"{len(uses_gauge)} autoscaler(s) read {DESIRED_GAUGE}, which the EPP exports only "
                    "with [autoscale] enabled = true in its switchyard.toml (epp/configmap.yaml does not set it)"
                )

    def check_pool_target(self, who, pool, dep_name):
        if pool not in self.endpoint_deployments:
            self.err(f"{who}: pool {pool!r} is not an EPP [[endpoints]] id with a DNS Service here (ids: {', '.join(sorted(self.endpoint_deployments))})")
        elif dep_name not in self.endpoint_deployments[pool]:
            self.err(f"{who}: pool {pool} is the EPP endpoint of {self.endpoint_deployments[pool]}, but this scales Deployment/{dep_name}")

    # ------------------------------------------------------------------ run

    def run(self):
        self.load()
        self.check_schemas()
        self.check_copies()
        self.check_tomls()
        self.check_switchyard_configs()
        self.check_deployments()
        self.check_inferencepool()
        self.check_services()
        self.check_endpoints()
        self.check_podmonitors()
        self.check_routes()
        self.check_autoscalers()
        self.check_render()


# ------------------------------------------------------------------ helpers


def profile_kind(parsed):
    if {"name", "vendor", "peak_tflops"} <= parsed.keys():
        return "devices"
    if {"name", "num_layers", "hidden_size"} <= parsed.keys():
        return "models"
    return None


def parse_flags(tokens):
    flags = {}
    for i, t in enumerate(tokens):
        if t.startswith("--"):
            if "=" in t:
                k, v = t.split("=", 1)
                flags[k] = v
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                flags[t] = tokens[i + 1]
            else:
                flags[t] = ""
    return flags


def addr_port(addr):
    m = re.fullmatch(r"(?:\[[^\]]+\]|[^:\[\]]*):(\d{1,5})", addr or "")
    return int(m.group(1)) if m and int(m.group(1)) <= 65535 else None


def url_authority(url):
    """Host and port of `http://host[:port][/]`, as tier.rs's parse_http_url reads it."""
    if not url.startswith("http://"):
        raise ValueError(f"url `{url}` must start with http://")
    auth = url[len("http://"):].rstrip("/")
    if not auth or "/" in auth:
        raise ValueError(f"url `{url}` must be a base URL without a path")
    if auth.startswith("["):
        host, _, rest = auth[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif ":" in auth:
        host, port = auth.rsplit(":", 1)
    else:
        host, port = auth, None
    if not host:
        raise ValueError(f"url `{url}` has no host")
    if port is None:
        return host, 80
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"url `{url}`: port `{port}` is not a number in 0..=65535")
    return host, int(port)


def split_service_host(host):
    """`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` -> (svc, ns or None)."""
    parts = host.split(".")
    if len(parts) >= 2:
        return parts[0], parts[1]
    return parts[0], None


_ROUTES = None


def http_routes():
    global _ROUTES
    if _ROUTES is None:
        _ROUTES = set()
        path = os.path.join(REPO, "server", "src", "http.rs")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                _ROUTES = set(re.findall(r'\.route\(\s*"([^"]+)"', fh.read()))
    return _ROUTES


def semantic_config_problems(cfg):
    """What Config::validate (scheduler/src/config/mod.rs) refuses, as far as the file shows."""
    out = []
    devices, endpoints = cfg.get("devices") or [], cfg.get("endpoints") or []
    if not devices and not endpoints:
        out.append("lists no [[devices]] and no [[endpoints]]")
    ids = [d.get("id") for d in devices] + [e.get("id") for e in endpoints]
    for i in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        out.append(f"id `{i}` appears twice among devices and endpoints")
    for e in endpoints:
        eid = e.get("id", "")
        if not eid or "/" in eid:
            out.append(f"endpoint id `{eid}` must be non-empty and contain no `/`")
        try:
            url_authority(e.get("url", ""))
        except ValueError as err:
            out.append(f"endpoints.{eid}: {err}")
        if not e.get("profile") and e.get("engine") != "switchyard":
            out.append(f"endpoints.{eid}: a {e.get('engine')} endpoint needs `profile`")
    slo = (cfg.get("router") or {}).get("slo") or {}
    pct = slo.get("percentile", 0.95)
    if isinstance(pct, (int, float)) and pct >= 1:
        pct = pct / 100
    if not (slo.get("ttft_ms", 1) > 0 and slo.get("tpot_ms", 1) > 0 and 0 < pct < 1):
        out.append("router.slo needs ttft_ms > 0, tpot_ms > 0 and 0 < percentile < 1")
    for d in devices:
        mf = d.get("memory_fraction", 0.9)
        if not (isinstance(mf, (int, float)) and 0 < mf <= 1):
            out.append(f"devices.{d.get('id')}.memory_fraction must be in (0, 1]")
    return out


# ----------------------------------------------- the Rust config vocabulary

_SCHEMA = False


def rust_schema():
    """Structs and enums of the config, read from the Rust sources (None when not found)."""
    global _SCHEMA
    if _SCHEMA is not False:
        return _SCHEMA
    structs, enums = {}, {}
    cfg_dir = os.path.join(REPO, "scheduler", "src", "config")
    for path in [os.path.join(cfg_dir, "mod.rs"), os.path.join(cfg_dir, "tier.rs")]:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                structs.update(parse_structs(fh.read()))
    for src in ("scheduler/src", "backends/src"):
        for dirpath, _, files in os.walk(os.path.join(REPO, src)):
            for fn in files:
                if fn.endswith(".rs"):
                    with open(os.path.join(dirpath, fn), encoding="utf-8") as fh:
                        for name, variants in parse_enums(fh.read()).items():
                            enums.setdefault(name, variants)
    _SCHEMA = {"structs": structs, "enums": enums} if "Config" in structs else None
    return _SCHEMA


def serde_attrs(lines):
    return " ".join(l for l in lines if l.startswith("#[serde("))


def parse_structs(text):
    out = {}
    for m in re.finditer(r"((?:^[ \t]*#\[[^\n]*\n|^[ \t]*///[^\n]*\n)*)^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S):
        attrs = [l.strip() for l in m.group(1).splitlines()]
        container = serde_attrs(attrs)
        if "Deserialize" not in " ".join(attrs):
            continue
        fields, pending = {}, []
        for line in m.group(3).splitlines():
            s = line.strip()
            if s.startswith("#["):
                pending.append(s)
                continue
            fm = re.match(r"pub (\w+): (.+),$", s)
            if fm:
                a = serde_attrs(pending)
                rename = re.search(r'rename = "([^"]+)"', a)
                key = rename.group(1) if rename else fm.group(1)
                ty = fm.group(2)
                fields[key] = {
                    "type": ty,
                    "default": "default" in a or re.search(r"\bdefault\b", container) is not None,
                    "duration": "serde_ms" in a or "serde_secs" in a,
                }
                pending = []
            elif s and not s.startswith("//"):
                pending = []
        out[m.group(2)] = {"fields": fields, "deny_unknown": "deny_unknown_fields" in container}
    return out


def parse_enums(text):
    out = {}
    for m in re.finditer(r"((?:^[ \t]*#\[[^\n]*\n|^[ \t]*///[^\n]*\n)*)^pub enum (\w+) \{\n(.*?)^\}", text, re.M | re.S):
        attrs = serde_attrs([l.strip() for l in m.group(1).splitlines()])
        rule = re.search(r'rename_all = "([^"]+)"', attrs)
        if not rule:
            continue
        variants, pending = [], []
        for line in m.group(3).splitlines():
            s = line.strip()
            if s.startswith("#["):
                pending.append(s)
                continue
            vm = re.match(r"(\w+),?$", s)
            if vm:
                rename = re.search(r'rename = "([^"]+)"', serde_attrs(pending))
                variants.append(rename.group(1) if rename else rename_variant(vm.group(1), rule.group(1)))
                pending = []
            elif s and not s.startswith("//"):
                variants = None  # data-carrying variants: not a plain string enum
                break
        if variants:
            out[m.group(2)] = variants
    return out


def rename_variant(name, rule):
    words = re.findall(r"[A-Z][a-z0-9]*", name) or [name]
    if rule == "lowercase":
        return name.lower()
    if rule == "kebab-case":
        return "-".join(w.lower() for w in words)
    if rule == "snake_case":
        return "_".join(w.lower() for w in words)
    return name


def validate(schema, struct, value, path):
    s = schema["structs"].get(struct)
    if s is None or not isinstance(value, dict):
        return []
    out = []
    fields = s["fields"]
    for key, v in value.items():
        where = f"{path}{key}"
        if key not in fields:
            if s["deny_unknown"]:
                out.append(f"unknown field `{where}` (known: {', '.join(sorted(fields))})")
            continue
        out.extend(check_type(schema, fields[key], v, where))
    for key, f in fields.items():
        if key not in value and not f["default"] and not f["type"].startswith("Option<"):
            out.append(f"missing field `{path}{key}`")
    return out


def check_type(schema, field, v, where):
    ty = field["type"]
    inner = re.fullmatch(r"Option<(.+)>", ty)
    ty = inner.group(1) if inner else ty
    vec = re.fullmatch(r"Vec<(.+)>", ty)
    if vec:
        if not isinstance(v, list):
            return [f"`{where}` must be an array"]
        out = []
        for i, item in enumerate(v):
            out.extend(check_type(schema, {**field, "type": vec.group(1)}, item, f"{where}[{i}]"))
        return out
    if ty in schema["structs"]:
        if not isinstance(v, dict):
            return [f"`{where}` must be a table"]
        return validate(schema, ty, v, f"{where}.")
    if ty in schema["enums"]:
        if v not in schema["enums"][ty]:
            return [f"`{where}` = {v!r}, expected one of {', '.join(schema['enums'][ty])}"]
        return []
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if field["duration"] or ty in ("f64", "f32"):
        ok = number and v >= 0 if field["duration"] else number
    elif ty in ("u8", "u16", "u32", "u64", "usize"):
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    elif ty in ("String", "PathBuf", "SocketAddr"):
        ok = isinstance(v, str)
        if ok and ty == "SocketAddr" and addr_port(v) is None:
            return [f"`{where}` = {v!r} is not IP:PORT"]
    elif ty == "bool":
        ok = isinstance(v, bool)
    else:
        return []  # a type this check does not model
    return [] if ok else [f"`{where}` = {v!r} does not fit type {ty}"]


# ------------------------------------------------------------ schema helpers


def fmt_path(path):
    """spec.template.spec.containers[0].name from a jsonschema error path."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the object)"


def short(msg, limit=240):
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def quantity(q):
    """A Kubernetes quantity or KEDA threshold as a number ("1", 1, "1500m"), else None."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)\s*", str(q)) if not isinstance(q, bool) else None
    if m is None:
        return None
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def crd_schema_name(api_version, kind):
    """schemas/ file name of a CRD kind: GROUP_VERSION_KIND.json, lower case."""
    group, _, version = api_version.rpartition("/")
    return f"{group}_{version}_{kind.lower()}.json"


def crd_validator_class(jsonschema):
    """Draft 2020-12 plus x-kubernetes-list-map-keys: the items of a `map` list have unique keys."""

    def list_map_keys(validator, keys, instance, schema):
        if not validator.is_type(instance, "array"):
            return
        seen = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = json.dumps([item.get(k) for k in keys], sort_keys=True, default=str)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"items {seen[key]} and {i} have the same {'/'.join(keys)} (x-kubernetes-list-type: map)"
                )
            seen.setdefault(key, i)

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": list_map_keys}
    )


def crd_json_schema(crd, version, source, license_id):
    """A JSON Schema for one served version of a CustomResourceDefinition (its
    openAPIV3Schema): validations kept, documentation and defaults dropped, objects closed
    the way the API server's strict field validation closes them."""
    spec = crd["spec"]
    versions = spec["versions"]
    v = next((x for x in versions if x["name"] == version), None) if version else next(
        (x for x in versions if x.get("storage")), versions[0]
    )
    if v is None:
        raise SystemExit(f"check_manifests: the CRD has no version {version} ({', '.join(x['name'] for x in versions)})")
    dropped = {}

    def conv(n, junctor=False):
        out = {}
        for k, val in n.items():
            if k == "properties":
                out[k] = {p: conv(sub) for p, sub in val.items()}
            elif k == "items":
                out[k] = conv(val)
            elif k == "additionalProperties":
                out[k] = conv(val) if isinstance(val, dict) else val
            elif k in ("anyOf", "oneOf", "allOf"):
                out[k] = [conv(b, True) for b in val]
            elif k == "not":
                out[k] = conv(val, True)
            elif k in SCHEMA_KEYS:
                out[k] = val
            elif k == "x-kubernetes-list-type" and val == "set":
                out["uniqueItems"] = True
            elif k == "x-kubernetes-list-map-keys" and n.get("x-kubernetes-list-type") == "map":
                out[k] = val
            elif k not in ("nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"):
                dropped[k] = dropped.get(k, 0) + 1
        if n.get("nullable") and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if n.get("x-kubernetes-embedded-resource") and "properties" in out:
            for p in ("apiVersion", "kind"):
                out["properties"].setdefault(p, {"type": "string"})
            out["properties"].setdefault("metadata", {"type": "object"})
        # Structural schemas: an object with properties takes no others (strict field
        # validation refuses them) unless it preserves unknown fields. Branches of
        # anyOf/oneOf/allOf/not only add constraints to the node they are on.
        if (
            not junctor
            and "properties" in out
            and "additionalProperties" not in out
            and not n.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out

    raw = v["schema"]["openAPIV3Schema"]
    body = conv(raw)
    api = f"{spec['group']}/{v['name']}"
    props = body.setdefault("properties", {})
    meta = conv(raw.get("properties", {}).get("metadata") or {"type": "object"}, junctor=True)
    props["apiVersion"] = {"const": api}
    props["kind"] = {"const": spec["names"]["kind"]}
    props["metadata"] = meta
    if "status" in props:
        props["status"] = {"type": "object"}
    body["required"] = ["apiVersion", "kind", "metadata"] + [r for r in body.get("required", []) if r not in ("apiVersion", "kind", "metadata")]
    body["additionalProperties"] = False
    cel = dropped.pop("x-kubernetes-validations", 0)
    other = ", ".join(f"{k} ({n})" for k, n in sorted(dropped.items()))  # format: not asserted
    comment = (
        f"{spec['names']['kind']} {api}: JSON Schema converted by `python3 scripts/check_manifests.py "
        f"--import-crd` from spec.versions[name={v['name']}].schema.openAPIV3Schema of {source}. "
        f"License: {license_id} (the upstream project's). Dropped: {cel} CEL rule(s) "
        f"(x-kubernetes-validations, not evaluated here), {other}. Objects with properties are "
        "closed (additionalProperties: false) unless x-kubernetes-preserve-unknown-fields; "
        "nullable adds null; list-type set = uniqueItems, list-type map = unique "
        "x-kubernetes-list-map-keys; status is not checked; metadata is also checked against "
        "the Kubernetes ObjectMeta schema."
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$comment": comment, **body}


def import_crd(root, crd_path, version, source, license_id):
    with open(crd_path, encoding="utf-8") as fh:
        crds = [d for d in yaml.safe_load_all(fh) if d and d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise SystemExit(f"check_manifests: {crd_path} holds {len(crds)} CustomResourceDefinitions, not 1")
    if not re.search(r"\bcommit [0-9a-f]{7,40}\b", source or ""):
        raise SystemExit("check_manifests: --source must name the repository, path, version and `commit SHA`")
    schema = crd_json_schema(crds[0], version, source, license_id)
    import jsonschema

    crd_validator_class(jsonschema).check_schema(schema)
    api, kind = schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"]
    out = os.path.join(root, SCHEMA_DIR, crd_schema_name(api, kind))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(schema, fh, indent=1)
        fh.write("\n")
    print(f"check_manifests: wrote {os.path.relpath(out)} ({os.path.getsize(out)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.join(REPO, "deploy", "kubernetes"))
    ap.add_argument("--import-crd", metavar="CRD_YAML", help="write ROOT/schemas/GROUP_VERSION_KIND.json from a CRD file, then exit")
    ap.add_argument("--crd-version", help="with --import-crd: the version to take (default: the storage version)")
    ap.add_argument("--source", help='with --import-crd: "OWNER/REPO PATH at TAG (commit SHA)", recorded in $comment')
    ap.add_argument("--license", default="Apache-2.0", help="with --import-crd: the CRD's license (default Apache-2.0)")
    opts = ap.parse_args()
    if opts.import_crd:
        import_crd(opts.root, opts.import_crd, opts.crd_version, opts.source, opts.license)
        return
    c = Checker(opts.root)
    c.run()
    for n in c.notes:
        print(f"check_manifests: note: {n}", file=sys.stderr)
    if c.errors:
        for e in c.errors:
            print(f"check_manifests: error: {e}", file=sys.stderr)
        print(f"check_manifests: FAILED with {len(c.errors)} problem(s)", file=sys.stderr)
        sys.exit(1)
    kinds = {}
    for _, d in c.objects:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    pools = len(getattr(c, "pool_members", []))
    eps = sum(len(cfg.get("endpoints") or []) for _, d in c.deployments() for _, _, cfg, _ in d.get("_configs", []))
    print(
        f"check_manifests: OK: {len(c.objects)} objects in {len(c.files)} files "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
        f"InferencePool over {pools} pool Deployments, EPP with {eps} endpoints, {c.toml_count} TOML files parsed"
    )
    k8s = c.schema_counts.get(f"Kubernetes {K8S_VERSION}", 0)
    crd = sum(n for k, n in c.schema_counts.items() if k != f"Kubernetes {K8S_VERSION}")
    print(
        f"check_manifests: OK: schemas: {k8s} distinct objects valid against Kubernetes {K8S_VERSION} "
        f"(kubernetes-validate {getattr(c.kv, '__version__', '?')}, strict), {crd} against "
        f"{len(c.crd_validators)} CRD schemas in {SCHEMA_DIR}/; "
        + (
            "kustomize renders: " + ", ".join(f"{what} ({n} objects)" for what, n in c.renders)
            if c.renders
            else "no kustomize render (no kubectl)"
        )
    )


if __name__ == "__main__":
    main()
