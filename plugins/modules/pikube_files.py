"""Put a role's configuration files in place in one round trip.

A role writes several small files (apt settings, a sysctl drop-in, a modules-load list, a
repository line, a pin). As one ``template`` task each, a re-run that changes nothing still
costs two module runs per file on every node (``stat`` for the checksum, then ``file`` for
owner and mode). This module gets every file's rendered content from the controller and
compares each file's bytes, owner, group and mode, and its folder's, on the node, in one run.
It writes only the files that differ, each through a temporary file in its folder and a
rename (``unsafe_writes`` for a file that cannot be renamed over: a bind mount, FAT).
Check mode reports what would change; diff mode shows it, except for a file marked secret.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_files
short_description: Write a role's small configuration files in one module run
description:
  - Makes each file of O(files) hold exactly O(files[].content), with its owner, group and
    mode, or removes it (O(files[].state=absent)); makes each folder of O(directories) exist
    with its owner, group and mode. Changes only what differs.
  - RV(changed_paths) names every path that changed, so later tasks and handlers can act on
    one file's change.
options:
  directories:
    description: Folders to create or correct, before the files.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      owner:
        description: Owner; V("") leaves it as it is (a new one gets the running user's).
        type: str
        default: root
      group:
        description: Group; V("") leaves it as it is (a new one gets the running group).
        type: str
        default: root
      mode: {description: Octal mode., type: str, default: "0755"}
  files:
    description: Files to write or remove.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path; its folder must exist., type: path, required: true}
      content: {description: The file's text (state=present)., type: str}
      state: {description: Present or absent., type: str, default: present,
              choices: [present, absent]}
      owner: {description: Owner (V("") as for folders, kept on rewrite)., type: str, default: root}
      group: {description: Group (V("") as for folders, kept on rewrite)., type: str, default: root}
      mode: {description: Octal mode., type: str, default: "0644"}
      unsafe_writes:
        description: Write in place when the file cannot be renamed over (bind mount, FAT).
        type: bool
        default: false
      secret:
        description: Never show the content in a diff.
        type: bool
        default: false
      validate:
        description:
          - A command run on the new content before it replaces the file, with V(%s) for the
            path of a temporary copy (split as words, no shell), as the template module's
            O(validate). The file is left as it was when the command fails. Not run in check
            mode.
        type: str
author: pikube
"""

RETURN = r"""
changed_paths:
  description: Every path created, rewritten, corrected (owner, group, mode) or removed.
  returned: always
  type: list
  elements: str
"""

Spec = dict[str, Any]
STATES = ["present", "absent"]


def _mode(value: str, where: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{where}: mode {value!r} is not an octal mode such as 0644")
    return mode


def _ids(spec: Spec) -> tuple[int, int]:
    """The owner's and group's ids; -1 (as os.chown takes it) for one given as "": left as is."""
    try:
        uid = pwd.getpwnam(spec["owner"]).pw_uid if spec["owner"] else -1
        gid = grp.getgrnam(spec["group"]).gr_gid if spec["group"] else -1
    except KeyError as err:
        raise ValueError(f"{spec['path']}: no such user or group ({err})") from None
    return uid, gid


def _attrs_differ(st: os.stat_result, uid: int, gid: int, mode: int) -> bool:
    return (
        uid not in (-1, st.st_uid) or gid not in (-1, st.st_gid) or stat.S_IMODE(st.st_mode) != mode
    )


def ensure_directory(spec: Spec, check: bool) -> bool:
    path = spec["path"]
    uid, gid = _ids(spec)
    mode = _mode(spec["mode"], path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check:
            os.makedirs(path, mode)  # missing parents too, as the file module does
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} exists and is not a folder")
    if not _attrs_differ(st, uid, gid, mode):
        return False
    if not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True


def _read(path: str) -> tuple[os.stat_result | None, bytes | None]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} exists and is not a regular file")
    with open(path, "rb") as handle:
        return st, handle.read()


def _fill(fd: int, path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """Write ``data`` through ``fd`` to disk, then give ``path`` its owner and mode."""
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _validate(command: str, tmp: str, path: str, secret: bool) -> None:
    """Run ``command`` (``%s``: the new content's temporary copy); raise when it fails (with
    what it said, unless the file is secret: a checker may quote the content)."""
    argv = [word.replace("%s", tmp) for word in shlex.split(command)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as err:
        raise ValueError(f"{path}: cannot run the check {argv[0]!r}: {err}") from None
    if proc.returncode != 0:
        said = "(not shown: the file is secret)" if secret else (proc.stderr or proc.stdout)
        said = said.strip()[-2000:]
        raise ValueError(
            f"{path}: the new content fails its check ({command}, exit {proc.returncode}): "
            f"{said}; the file was left as it was"
        )


def _fill_in_place(path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """Overwrite ``path`` itself (a bind mount or FAT cannot be renamed over)."""
    _fill(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), path, data, uid, gid, mode)


def _write(
    path: str,
    data: bytes,
    ids: tuple[int, int, int],
    in_place: bool,
    validate: tuple[str, bool] | None,
) -> None:
    """Write ``data`` to ``path`` with ``ids`` (uid, gid, mode): through a checked (``validate``:
    command, secret) temporary file and a rename, or in place."""
    uid, gid, mode = ids
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(f"{path}: its folder {folder} does not exist")
    if in_place and not validate:
        _fill_in_place(path, data, uid, gid, mode)
        return
    fd, tmp = tempfile.mkstemp(prefix=".pikube-", dir=folder)
    try:
        _fill(fd, tmp, data, uid, gid, mode)
        if validate:
            _validate(validate[0], tmp, path, validate[1])
        if in_place:
            _fill_in_place(path, data, uid, gid, mode)
            os.unlink(tmp)
        else:
            os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def ensure_file(spec: Spec, check: bool, diffs: list[dict[str, str]]) -> bool:
    path = spec["path"]
    st, before = _read(path)
    if spec["state"] == "absent":
        if st is None:
            return False
        if not check:
            os.unlink(path)
        diffs.append({"before_header": path, "after_header": path,
                      "before": "(present)\n", "after": "(absent)\n"})  # fmt: skip
        return True
    if spec.get("content") is None:
        raise ValueError(f"{path}: state=present needs content")
    validate = spec.get("validate")
    if validate is not None and "%s" not in validate:
        raise ValueError(f"{path}: validate {validate!r} has no %s for the file to check")
    data = spec["content"].encode("utf-8")
    uid, gid = _ids(spec)
    mode = _mode(spec["mode"], path)
    if st is not None and before == data and not _attrs_differ(st, uid, gid, mode):
        return False
    if st is not None:  # a rewrite keeps the owner and group left as they are
        uid, gid = (st.st_uid if uid == -1 else uid), (st.st_gid if gid == -1 else gid)
    if not check:
        checked = (validate, spec["secret"]) if validate else None
        _write(path, data, (uid, gid, mode), spec["unsafe_writes"], checked)
    if before != data:
        shown = not spec["secret"]
        diffs.append({
            "before_header": path if st is not None else f"{path} (absent)",
            "after_header": path,
            "before": (before or b"").decode("utf-8", "replace") if shown else "(secret)\n",
            "after": spec["content"] if shown else "(secret, changed)\n",
        })  # fmt: skip
    return True


def main() -> None:
    path_spec = {"type": "path", "required": True}
    module = AnsibleModule(
        argument_spec={
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": path_spec,
                    "owner": {"type": "str", "default": "root"},
                    "group": {"type": "str", "default": "root"},
                    "mode": {"type": "str", "default": "0755"},
                },
            },
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": path_spec,
                    "content": {"type": "str"},
                    "state": {"type": "str", "default": "present", "choices": STATES},
                    "owner": {"type": "str", "default": "root"},
                    "group": {"type": "str", "default": "root"},
                    "mode": {"type": "str", "default": "0644"},
                    "unsafe_writes": {"type": "bool", "default": False},
                    "secret": {"type": "bool", "default": False},
                    "validate": {"type": "str"},
                },
            },
        },
        supports_check_mode=True,
    )
    check = module.check_mode
    changed: list[str] = []
    diffs: list[dict[str, str]] = []
    try:
        for spec in [*module.params["directories"], *module.params["files"]]:
            if not os.path.isabs(spec["path"]):
                raise ValueError(f"{spec['path']!r} is not an absolute path")
        for spec in module.params["directories"]:
            if ensure_directory(spec, check):
                changed.append(spec["path"])
        for spec in module.params["files"]:
            if ensure_file(spec, check, diffs):
                changed.append(spec["path"])
    except (OSError, ValueError) as err:
        module.fail_json(msg=str(err), changed_paths=changed)
    result: dict[str, Any] = {"changed": bool(changed), "changed_paths": changed}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
