"""Validates Kubernetes manifests offline: the output of `kubectl kustomize` on stdin.

Custom resources (CloudNativePG's Cluster, Crunchy PGO's PostgresCluster) against the CRD
schemas pinned in deploy/schemas (the operators' own openAPIV3Schema, see each file's
"source"); every other kind against Kubernetes' own schemas (kubernetes-validate, strict: an
unknown field is an error). Prints the documents as one JSON list on stdout for the caller's
own checks; exits 1 naming every document that fails.

    kubectl kustomize deploy/cnpg/three-nodes | python validate_manifests.py deploy/schemas [k8s_version]
"""

import gzip
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import regex
import yaml
from jsonschema import validators


def _pattern(validator, pattern, instance, schema):
    # The CRDs' patterns are Go (RE2) regular expressions, with Unicode classes like \pZ that
    # Python's re lacks; the regex module has them.
    if validator.is_type(instance, "string") and not regex.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _properties(validator, properties, instance, schema):
    # Kubernetes drops (or, with strict field validation, refuses) a field that a structural
    # schema does not declare; JSON Schema would let it pass silently. Refuse it here.
    yield from jsonschema.Draft7Validator.VALIDATORS["properties"](validator, properties, instance, schema)
    if (
        validator.is_type(instance, "object")
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        for key in instance:
            if key not in properties:
                yield jsonschema.ValidationError(f"unknown field {key!r}")


CrdValidator = validators.extend(
    jsonschema.Draft7Validator, {"pattern": _pattern, "properties": _properties}
)


def crd_schemas(folder):
    out = {}
    for f in sorted(pathlib.Path(folder).glob("*.json.gz")):
        s = json.load(gzip.open(f, "rt"))
        out[(f"{s['group']}/{s['version']}", s["kind"])] = s
    return out


def main():
    schemas = crd_schemas(sys.argv[1])
    k8s = sys.argv[2] if len(sys.argv) > 2 else "1.32.0"
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    failures = []
    for d in docs:
        what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        crd = schemas.get((d.get("apiVersion"), d.get("kind")))
        try:
            if crd is not None:
                errors = sorted(
                    CrdValidator(crd["openAPIV3Schema"]).iter_errors(d), key=lambda e: list(e.path)
                )
                if errors:
                    raise jsonschema.ValidationError(
                        "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
                    )
                # The CRD schema leaves metadata open: name it at least.
                if not d.get("metadata", {}).get("name"):
                    raise jsonschema.ValidationError("metadata.name is missing")
                print(f"valid against the pinned CRD schema: {what}", file=sys.stderr)
            elif "." in d.get("apiVersion", "").split("/")[0] and not d["apiVersion"].startswith(
                ("batch/", "networking.k8s.io/", "apps/", "policy/", "rbac.authorization.k8s.io/")
            ):
                raise ValueError(f"no pinned schema for {d.get('apiVersion')} {d.get('kind')}")
            else:
                kubernetes_validate.validate(d, k8s, strict=True)
                print(f"valid against Kubernetes {k8s}: {what}", file=sys.stderr)
        except Exception as e:  # every failure, each named
            failures.append(f"{what}: {getattr(e, 'message', e)}")
    json.dump(docs, sys.stdout)
    if failures:
        print("\n".join(["invalid:"] + failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
