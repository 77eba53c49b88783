"""The secrets file (/etc/sparkstack/secrets.env): one rule for how it is written, so every reader gets the same
values.

Its readers used to disagree: systemd's EnvironmentFile= strips quotes and reads backslash escapes, docker's
--env-file keeps quotes as part of the value, and sparkstack-hub stripped them its own way. Now systemd reads it
for the units (the door, the models' launch scripts, which pass each container only the variables it needs by
name), and this module reads it for the fetcher. A file that keeps the rule reads the same in both:

  NAME=VALUE            one per line; blank lines and lines starting with # are skipped
  NAME                  letters, digits and _, not starting with a digit
  VALUE                 1 to 4096 printable ASCII characters without spaces, quotes, backslashes or $

Problems are reported by line number and name, never with the value.
"""

import os
import re
import sys

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What systemd would unquote, unescape or expand, and what a shell would: never part of a value.
FORBIDDEN = frozenset(" \"'`\\$")
MAX_VALUE = 4096


class SecretsError(Exception):
    pass


def problems(text):
    """(line number, what is wrong) for every line that breaks the rule; names appear, values never do."""
    found, seen = [], set()
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not NAME.match(name):
            found.append((number, "is not NAME=VALUE (a name of letters, digits and _)"))
            continue
        if name in seen:
            found.append((number, f"{name} is set twice"))
        seen.add(name)
        why = value_problem(name, value)
        if why:
            found.append((number, why))
    return found


def value_problem(name, value):
    """What is wrong with VALUE as NAME's value (never showing it), or None."""
    if not value:
        return f"{name} is empty"
    if len(value) > MAX_VALUE:
        return f"{name} is longer than {MAX_VALUE} characters"
    if any(c in FORBIDDEN or not " " < c < "\x7f" for c in value):
        return (f"{name} holds a space, a quote, a backslash, a $ or a character that is not printable ASCII: write "
                "the value bare (no quotes), as systemd and this kit would then read it differently")
    return None


def parse(text, path="secrets.env"):
    """NAME -> VALUE, or SecretsError naming each bad line (never its value)."""
    bad = problems(text)
    if bad:
        raise SecretsError("; ".join(f"{path} line {number}: {why}" for number, why in bad))
    return dict(line.split("=", 1) for line in text.split("\n") if line.strip() and not line.startswith("#"))


def read(path, names=None):
    """The file's values (only `names`, when given); {} when the file does not exist."""
    try:
        with open(path, encoding="ascii", errors="surrogateescape") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    values = parse(text, path)
    return {n: v for n, v in values.items() if names is None or n in names}


def set_value(path, name, value, only_if_absent=False):
    """Write NAME=VALUE into the file (replacing its line, keeping every other line as it is), root-only and
    atomically; True when the file changed. With only_if_absent, a NAME already set is kept."""
    # The value is checked whole: a newline in it would pass a line-by-line check as a second line.
    why = value_problem(name, value) if NAME.match(name) else f"{name[:60]!r} is not a name"
    if why:
        raise SecretsError(f"refusing to write {name}: {why}")
    try:
        with open(path, encoding="ascii", errors="surrogateescape") as handle:
            before = handle.read()
    except FileNotFoundError:
        before = ""
    lines = before.split("\n")
    if only_if_absent and any(line.partition("=")[0] == name for line in lines):
        return False
    kept = [line for line in lines if line.partition("=")[0] != name]
    while kept and not kept[-1]:
        kept.pop()
    text = "\n".join(kept + [f"{name}={value}"]) + "\n"
    if text == before:
        return False
    partial = f"{path}.sparkstack-new"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a leftover partial file keeps its mode through O_TRUNC
    with os.fdopen(descriptor, "w", encoding="ascii", errors="surrogateescape") as handle:
        handle.write(text)
    os.replace(partial, path)
    return True


def main(argv=None):
    """`python3 -m sparkstack_host.secrets check PATH`: exit 1 with one line per problem (the deploy's preflight).
    `... make NAME PATH`: set NAME to 32 random bytes in hex unless the file has it (the deploy; nothing printed)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "make":
        set_value(argv[2], argv[1], os.urandom(32).hex(), only_if_absent=True)
        return 0
    if len(argv) != 2 or argv[0] != "check":
        sys.exit("usage: secrets.py check PATH | make NAME PATH")
    try:
        with open(argv[1], encoding="ascii", errors="surrogateescape") as handle:
            bad = problems(handle.read())
    except FileNotFoundError:
        bad = []
    for number, why in bad:
        print(f"{argv[1]} line {number}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
