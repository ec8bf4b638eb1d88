"""`lrfast info`: version, backends (and why one is unavailable), optimizers (from the rule registry), CPU,
threads, Numba threading layer."""


def register(subparsers):
    p = subparsers.add_parser("info", help="show version, backends and machine facts")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from .._info import collect

    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(map(len, facts))
    for key, value in facts.items():
        if key in ("backends", "optimizers"):
            for name, status in value.items():
                print(f"{key[:-1] + ' ' + name:<{width + 8}}  {status}")
        else:
            print(f"{key:<{width + 8}}  {value}")
    return 0
