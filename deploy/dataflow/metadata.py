"""Writes the Dataflow Flex Template's metadata (deploy/dataflow/metadata.json) from the scorer's own flags, so the
template's parameters are exactly the CLI's, each with the CLI's help.

    python deploy/dataflow/metadata.py > deploy/dataflow/metadata.json
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pipeline import options  # noqa: E402

REQUIRED = {"output"}  # and one of input / input_tfrecords, which the scorer checks itself


def metadata() -> dict:
    parameters = []
    for action in options.build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        name = action.option_strings[0].lstrip("-")
        # A default that is a path of this checkout (the shipped model's) would differ on every machine.
        shown = action.default not in (None, [], ()) and not os.path.isabs(str(action.default))
        default = f" (default: {action.default})" if shown else ""
        parameters.append({"name": name, "label": name.replace("_", " "),
                           "helpText": " ".join((action.help or "").split()) + default,
                           "isOptional": name not in REQUIRED})
    return {"name": "fashion-scorer", "description": options.build_parser().description,
            "sdkInfo": {"language": "PYTHON"}, "parameters": parameters}


if __name__ == "__main__":
    print(json.dumps(metadata(), indent=2))
