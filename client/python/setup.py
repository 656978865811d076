"""Build hook: generates the gRPC stubs from proto/ with grpcio-tools.

The stubs (``iadb/_proto/database_pb2*.py``) are produced while the package
is built and are never committed. The proto file is looked up, in order:

1. ``$IADB_PROTO_DIR/iadb/v1/database.proto`` (an explicit override);
2. ``proto/iadb/v1/database.proto`` next to this file (an sdist carries a
   copy there, see ``sdist`` below);
3. ``../../proto/iadb/v1/database.proto`` (the repository checkout).

``pip install ./client/python`` builds in place from the checkout (3);
``python -m build`` makes an sdist that carries the proto (2) and a wheel
from it. ``pip install -e ./client/python`` generates into the source tree
(``iadb/_proto/``, ignored by git) so that an editable install imports.
"""

import os
import re
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_REL = os.path.join("iadb", "v1", "database.proto")


def proto_root():
    candidates = []
    if os.environ.get("IADB_PROTO_DIR"):
        candidates.append(os.environ["IADB_PROTO_DIR"])
    candidates.append(os.path.join(HERE, "proto"))
    candidates.append(os.path.join(HERE, "..", "..", "proto"))
    for root in candidates:
        if os.path.isfile(os.path.join(root, PROTO_REL)):
            return os.path.abspath(root)
    raise SystemExit(
        "iadb: cannot find %s; looked in %s. Set IADB_PROTO_DIR to the "
        "repository's proto/ folder." % (PROTO_REL, ", ".join(candidates))
    )


def generate_stubs(out_dir):
    """Runs grpc_tools.protoc and writes a flat iadb._proto package."""
    from grpc_tools import protoc
    import grpc_tools

    root = proto_root()
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            "-I" + root,
            "-I" + include,
            "--python_out=" + tmp,
            "--pyi_out=" + tmp,
            "--grpc_python_out=" + tmp,
            os.path.join(root, PROTO_REL),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("iadb: grpc_tools.protoc failed on " + PROTO_REL)
        os.makedirs(out_dir, exist_ok=True)
        generated = os.path.join(tmp, "iadb", "v1")
        for name in ("database_pb2.py", "database_pb2.pyi", "database_pb2_grpc.py"):
            with open(os.path.join(generated, name), encoding="utf-8") as f:
                text = f.read()
            # The stubs import each other as `iadb.v1.*` (the proto package);
            # here they live in `iadb._proto`, so make the import relative.
            text = re.sub(
                r"^from iadb\.v1 import database_pb2 as",
                "from . import database_pb2 as",
                text,
                flags=re.M,
            )
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
    with open(os.path.join(out_dir, "__init__.py"), "w", encoding="utf-8") as f:
        f.write('"""gRPC stubs generated from proto/iadb/v1/database.proto at build time."""\n')
    check_declared_range(out_dir)


def _floor(requirement_name):
    """The `>=` version of `requirement_name` in pyproject.toml's
    dependencies, as a tuple of ints (None when absent)."""
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'"%s>=([0-9.]+)' % re.escape(requirement_name), text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def check_declared_range(out_dir):
    """Refuses a build whose stubs need a newer grpcio or protobuf than the
    declared dependencies allow (someone bumped the grpcio-tools pin alone)."""
    with open(os.path.join(out_dir, "database_pb2.py"), encoding="utf-8") as f:
        pb2 = f.read()
    with open(os.path.join(out_dir, "database_pb2_grpc.py"), encoding="utf-8") as f:
        grpc_stub = f.read()
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*[\w.]+,\s*(\d+),\s*(\d+),\s*(\d+),", pb2)
    g = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", grpc_stub)
    needs = {
        "protobuf": tuple(int(x) for x in m.groups()) if m else None,
        "grpcio": tuple(int(x) for x in g.group(1).split(".")) if g else None,
    }
    for name, needed in needs.items():
        declared = _floor(name)
        if needed is not None and (declared is None or declared < needed):
            raise SystemExit(
                "iadb: the generated stubs need %s>=%s but pyproject.toml declares %s; "
                "update its dependencies with the grpcio-tools pin"
                % (name, ".".join(map(str, needed)), "none" if declared is None else ">=" + ".".join(map(str, declared)))
            )
    # protobuf runs gencode of major N on runtimes N and N+1 only.
    with open(os.path.join(HERE, "pyproject.toml"), encoding="utf-8") as f:
        ceiling = re.search(r'"protobuf>=[0-9.]+,<([0-9]+)"', f.read())
    if needs["protobuf"] and (ceiling is None or int(ceiling.group(1)) > needs["protobuf"][0] + 2):
        raise SystemExit(
            "iadb: protobuf gencode %d.x runs on protobuf %d and %d only; pyproject.toml must "
            "declare protobuf<%d" % (needs["protobuf"][0], needs["protobuf"][0], needs["protobuf"][0] + 1, needs["protobuf"][0] + 2)
        )


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = os.path.join(HERE, "iadb", "_proto")
        else:
            target = os.path.join(self.build_lib, "iadb", "_proto")
        generate_stubs(target)

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            base = os.path.join(self.build_lib, "iadb", "_proto")
            for name in ("__init__.py", "database_pb2.py", "database_pb2.pyi", "database_pb2_grpc.py"):
                outputs.append(os.path.join(base, name))
        return outputs


class SdistWithProto(sdist):
    """Carries a copy of the proto so that the sdist builds on its own."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        dest = os.path.join(base_dir, "proto", os.path.dirname(PROTO_REL))
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(os.path.join(proto_root(), PROTO_REL), dest)


setup(
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto},
)
