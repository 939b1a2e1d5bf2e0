"""The person behind ``sudo``: their home folder and ownership of the files pikube creates.

Writing an SD card needs root, so the README runs ``sudo pikube flash``. Under sudo, ``~``
is root's home and new files belong to root: the SSH key read for the card would be
root's, and host keys, known_hosts and image files would end up root-owned, so a later
``pikube up`` as the user could not update them. When pikube runs as root *through sudo*
(``SUDO_USER`` names a user other than root), it therefore

* expands ``~`` (and the default cache folder) as that user: :func:`adopt_invoker_home`;
* gives the files it creates inside that user's folders back to them: :func:`hand_over`.

Run as root without sudo (or as a normal user), both do nothing.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Invoker:
    name: str
    uid: int
    gid: int
    home: Path


def sudo_invoker() -> Invoker | None:
    """The user who ran ``sudo pikube``, or None (not root, no sudo, or sudo to root)."""
    name = os.environ.get("SUDO_USER", "")
    if os.geteuid() != 0 or not name or name == "root":
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    return Invoker(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def adopt_invoker_home() -> Invoker | None:
    """Under sudo, make ``~`` (``$HOME``) the invoking user's home for this process."""
    invoker = sudo_invoker()
    if invoker is not None:
        os.environ["HOME"] = str(invoker.home)
    return invoker


def hand_over(path: Path) -> None:
    """Under sudo, give ``path`` and its root-owned parent folders to the invoking user, up
    to the first folder that is already theirs. Outside the user's own folders (no parent
    of ``path`` belongs to them) nothing changes: root's files stay root's."""
    invoker = sudo_invoker()
    if invoker is None:
        return
    chain: list[Path] = []
    for entry in (path, *path.parents):
        try:
            owner = entry.lstat().st_uid
        except FileNotFoundError:
            return
        if owner == invoker.uid:
            break
        if owner != 0:
            return  # someone else's folder: not ours to change
        chain.append(entry)
    else:
        return  # reached / without finding a folder of the user's
    for entry in chain:
        os.lchown(entry, invoker.uid, invoker.gid)
