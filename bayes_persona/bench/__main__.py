"""``python -m bayes_persona.bench [scale|accounts|fuzz|all] ...``: the benchmarks (see :mod:`bayes_persona.bench`)."""

from bayes_persona.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
