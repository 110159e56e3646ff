"""`python`: call `module:function(ctx)` from the user's project.

The module's source enters the key, so editing the function rebuilds the step. The module is found
from the recipe's folder (as if run from there); extra params are passed through in `ctx.params`. The call
runs in the sandbox (see sandbox.py), in a child interpreter that sees the module and the project modules it
imports, the step's inputs and output, and nothing else of the project.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .. import sandbox
from ..errors import BuildError, RecipeError, did_you_mean
from .base import BuildContext, Builder, Param


def _module_file(module: str, recipe_dir: Path) -> Path | None:
    """Locate a module's source without importing it (for a top-level or package-less module)."""
    parts = module.split(".")
    for base in (recipe_dir, *map(Path, sys.path[1:])):
        candidate = Path(base, *parts)
        for f in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if f.is_file():
                return f
    if str(recipe_dir) not in sys.path:
        sys.path.insert(0, str(recipe_dir))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


class Python(Builder):
    name = "python"
    open_params = True
    uses_seed = True
    params = {"function": Param("str", required=True, help="the function to call, as module:function"),
              "packages": Param("list", default=[], help="distributions the function uses without importing "
                                "them (e.g. pandas through pyarrow's to_pandas); their versions enter the key"),
              "env": Param("dict", omit=True, help="environment variables the function may read (in the key)"),
              "network": Param("bool", omit=True, help="reach the network from the sandbox (needs output_hash)"),
              "output_hash": Param("str", omit=True, help="the content hash the output must have (32 hex digits)")}

    def check(self, params, *, file, step):
        module, sep, func = params["function"].partition(":")
        if not sep or not module or not func:
            raise RecipeError(f"expected 'module:function', got {params['function']!r}: write the module and the "
                              "function it defines, e.g. `function: steps:train` for def train(ctx) in steps.py",
                              file=file, step=step, key="params.function")
        recipe_dir = Path(file).parent.absolute() if file else Path.cwd()
        if _module_file(module, recipe_dir) is None:
            nearby = did_you_mean(module, [p.stem for p in recipe_dir.glob("*.py")])
            raise RecipeError(f"cannot find module '{module}'{nearby} from {recipe_dir}: put "
                              f"{module.replace('.', '/')}.py next to the recipe or make it importable",
                              file=file, step=step, key="params.function")
        sandbox.check_params(params, file=file, step=step)

    def key_extras(self, params, recipe_dir):
        """The module, the project and modelbuild modules it imports, and the versions of the packages
        it imports: a change to any of them rebuilds the step."""
        from ..codehash import project_code
        module = params["function"].partition(":")[0]
        code = project_code(_module_file(module, Path(recipe_dir)), Path(recipe_dir))
        from ..environment import package_version
        declared = {p: package_version(p) for p in params.get("packages") or []}
        return {"module": code["source"], "packages": {**code["packages"], **declared}}

    def key_code(self, params, recipe_dir):
        path = _module_file(params["function"].partition(":")[0], Path(recipe_dir))
        return {"extras.module": path} if path is not None else {}

    def build(self, ctx: BuildContext) -> None:
        function, env = ctx.params["function"], {k: str(v) for k, v in (ctx.params.get("env") or {}).items()}
        module = function.partition(":")[0]
        path = _module_file(module, ctx.recipe_dir)
        if path is None:
            raise BuildError(f"step '{ctx.step}': cannot find module '{module}' from {ctx.recipe_dir}")
        sandboxed = sandbox.use(step=ctx.step)
        if sandboxed:
            from ..codehash import PACKAGE_ROOT, closure
            files, _ = closure(path, (ctx.recipe_dir.resolve(), PACKAGE_ROOT))
            sandbox.run_python(ctx, function, files=files, sys_path=[str(_import_root(path.resolve(), module))],
                               declared_env=env, network=ctx.params.get("network", False))
        else:
            os.environ.update(env)
            sys.path.insert(0, str(ctx.recipe_dir))
            sandbox.call(function, ctx)
        ctx.record_facts({"sandboxed": sandboxed})
        sandbox.check_output(ctx.step, ctx.out, ctx.params)


def _import_root(path: Path, module: str) -> Path:
    """The folder a module is imported from: a.b in X/a/b.py or X/a/b/__init__.py is imported from X."""
    depth = len(module.split(".")) - (path.name != "__init__.py")
    return path.parents[depth]
