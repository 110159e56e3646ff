"""`command`: a shell command as a build step, like a DVC stage.

The command string is in the key; inputs arrive as environment variables (MB_IN_<NAME>, a path), the
output directory as MB_OUT. Scripts the command runs belong in `inputs:` as sources, so that editing
them rebuilds the step. The command runs in the sandbox (see sandbox.py): it sees its inputs, not the
project, and only the environment declared here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .. import sandbox
from ..errors import BuildError, RecipeError
from .base import BuildContext, Builder, Param


def env_name(input_name: str) -> str:
    return "MB_IN_" + re.sub(r"[^A-Za-z0-9]", "_", input_name).upper()


class Command(Builder):
    name = "command"
    params = {
        "cmd": Param("str", required=True, help="the shell command, e.g. python $MB_IN_SCRIPT $MB_IN_DATA $MB_OUT"),
        "env": Param("dict", default={}, help="environment variables the command may read (part of the key)"),
        "shell": Param("str", default="bash", choices=("bash", "sh")),
        "packages": Param("list", default=[], help="Python distributions the command uses; their versions "
                          "enter the key, so an upgrade rebuilds the step"),
        "network": Param("bool", omit=True, help="reach the network from the sandbox (needs output_hash)"),
        "output_hash": Param("str", omit=True, help="the content hash the output must have (32 hex digits)"),
    }
    uses_seed = True

    def check(self, params, *, file, step):
        if not all(isinstance(p, str) for p in params["packages"]):
            raise RecipeError("packages are distribution names, e.g. [pandas, scikit-learn]", file=file, step=step,
                              key="params.packages")
        from ..environment import package_version
        missing = [p for p in params["packages"] if package_version(p) is None]
        if missing:
            raise RecipeError(f"package {missing[0]!r} is not installed, so its version cannot enter the key: "
                              f"`pip install {missing[0]}` or remove it from packages", file=file, step=step,
                              key="params.packages")
        bad = [k for k, v in params["env"].items() if not isinstance(v, (str, int, float, bool))]
        if bad:
            raise RecipeError("environment values must be strings or numbers", file=file, step=step,
                              key=f"params.env.{bad[0]}")
        sandbox.check_params(params, file=file, step=step)

    def key_extras(self, params, recipe_dir):
        from ..environment import package_version
        return {"packages": {p: package_version(p) for p in sorted(params["packages"])}} if params["packages"] else {}

    def build(self, ctx: BuildContext) -> None:
        own = {"MB_OUT": str(ctx.out), "MB_STEP": ctx.step, "MB_SEED": str(ctx.seed), "PYTHON": sys.executable,
               **{env_name(name): str(path) for name, path in ctx.inputs.items()}}
        argv = [ctx.params["shell"], "-c", ctx.params["cmd"]]
        sandboxed = sandbox.use(step=ctx.step)
        ctx.log.info("$ %s%s", ctx.params["cmd"], "" if sandboxed else "  (unsandboxed)")
        sys.stdout.flush()
        if sandboxed:
            code = sandbox.run(argv, env=sandbox.environment(ctx.params["env"], **own), cwd=ctx.recipe_dir,
                               read=ctx.inputs.values(), write=[ctx.out], network=ctx.params.get("network", False))
        else:
            env = {**os.environ, **{k: str(v) for k, v in ctx.params["env"].items()}, **own}
            code = subprocess.run(argv, cwd=ctx.recipe_dir, env=env).returncode
        ctx.record_facts({"sandboxed": sandboxed})
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise BuildError(f"step '{ctx.step}': the command {ctx.params['cmd']!r} {how}. Fix the command "
                             "(`params.cmd`) or its inputs and build again"
                             + (". It ran in the sandbox, which shows only declared inputs and `env:` variables "
                                "(docs/sandbox.md)" if sandboxed else ""))
        sandbox.check_output(ctx.step, ctx.out, ctx.params)
