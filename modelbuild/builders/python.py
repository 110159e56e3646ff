"""`python`: call `module:function(ctx)` from the user's project.

The module's source enters the key, so editing the function rebuilds the step. The module is found
from the recipe's folder (as if run from there); extra params are passed through in `ctx.params`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

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
                                "them (e.g. pandas through pyarrow's to_pandas); their versions enter the key")}

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

    def key_extras(self, params, recipe_dir):
        """The module, the project and modelbuild modules it imports, and the versions of the packages
        it imports: a change to any of them rebuilds the step."""
        from ..codehash import project_code
        module = params["function"].partition(":")[0]
        code = project_code(_module_file(module, Path(recipe_dir)), Path(recipe_dir))
        from ..derivation import package_version
        declared = {p: package_version(p) for p in params.get("packages") or []}
        return {"module": code["source"], "packages": {**code["packages"], **declared}}

    def build(self, ctx: BuildContext) -> None:
        module_name, _, func_name = ctx.params["function"].partition(":")
        sys.path.insert(0, str(ctx.recipe_dir))
        module = importlib.import_module(module_name)
        func = getattr(module, func_name, None)
        if not callable(func):
            raise BuildError(f"step '{ctx.step}': module {module_name} has no function '{func_name}'")
        func(ctx)
