"""Validates scaledobject.yaml against scaledobject.schema.json offline (jsonschema and PyYAML
come with kubernetes-validate, which .ci/run installs), and checks that the metric its query
uses is one the server exports.

Usage: python3 deploy/kubernetes/keda/validate.py
"""
import json
import pathlib
import re
import sys

import jsonschema
import yaml

here = pathlib.Path(__file__).parent
document = yaml.safe_load((here / "scaledobject.yaml").read_text())
schema = json.loads((here / "scaledobject.schema.json").read_text())
jsonschema.validate(document, schema)
metrics = (here / "../../../host/src/observe/metrics.rs").read_text()
for trigger in document["spec"]["triggers"]:
    for name in re.findall(r"fiddler_[a-z_]+", trigger["metadata"]["query"]):
        if f'"{name}"' not in metrics:
            sys.exit(f"scaledobject.yaml queries {name}, which the server does not export")
print("deploy/kubernetes/keda/scaledobject.yaml: valid")
