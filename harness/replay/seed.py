"""A small ministry's homeserver: people in the directory, forums with history and
attachments, private team rooms. Seeded once, then copied for each run, so that the
runs with and without the guard face the very same server."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import attr

from harness.homeserver import Account, Homeserver, png

FIRST_NAMES = [
    "Camille",
    "Claire",
    "Sophie",
    "Nathalie",
    "Isabelle",
    "Julie",
    "Marie",
    "Anne",
    "Céline",
    "Aurélie",
    "Émilie",
    "Laure",
    "Hélène",
    "Agnès",
    "Chantal",
    "Sandrine",
    "Valérie",
    "Élodie",
    "Pauline",
    "Lucie",
    "Jean",
    "Pierre",
    "Michel",
    "Philippe",
    "Alain",
    "Nicolas",
    "Julien",
    "Thomas",
    "Antoine",
    "Mathieu",
    "François",
    "Laurent",
    "Olivier",
    "Sébastien",
    "Christophe",
    "Benoît",
    "Yves",
    "Hugo",
    "Louis",
    "Marc",
]
SURNAMES = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefèvre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guerin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
]
FORUM_TOPICS = (
    "Achats publics",
    "Juristes de l'État",
    "Ressources humaines",
    "Numérique en préfecture",
    "Sécurité des systèmes",
    "Finances locales",
    "Affaires européennes",
    "Urbanisme",
    "Santé au travail",
    "Communication de crise",
    "Données publiques",
    "Formation continue",
)
SENTENCES = (
    "Bonjour à tous, la note de cadrage est en pièce jointe.",
    "Quelqu'un a-t-il un modèle de convention à jour ?",
    "La réunion de jeudi est décalée à 14h, même salle.",
    "Merci pour le retour, je transmets au bureau concerné.",
    "Le nouveau circuit de validation s'applique dès lundi.",
    "Voici le compte rendu, relisez-le avant vendredi s'il vous plaît.",
    "Attention, le formulaire en ligne a changé d'adresse.",
    "Je serai l'interlocuteur pour la région jusqu'en mars.",
)

IMAGE_EVERY = 3  # one attachment in three is an image, the rest documents

T = TypeVar("T")
R = TypeVar("R")


@attr.frozen
class Scale:
    users: int = 1000
    forums: int = 40
    messages: int = 30  # text messages per forum
    media: int = 14  # attachments per forum (images and documents)
    private_rooms: int = 10
    ordinary_users: int = 20


@attr.frozen
class Person:
    user_id: str
    localpart: str
    name: str
    token: str


@attr.frozen
class Seeded:
    """What the runs need to know of the seeded server."""

    people: tuple[Person, ...]
    forums: tuple[str, ...]
    attachments: dict[str, tuple[str, ...]]  # room id -> its media (mxc URIs)
    victim: Person  # the civil servant whose password was phished
    colleagues: tuple[Person, ...]  # the ordinary users of the workload
    rooms_of: dict[str, tuple[str, ...]]  # a colleague's rooms at the start
    images: frozenset[str]  # the attachments a client shows as thumbnails
    media_bytes: int


def names(count: int) -> list[tuple[str, str]]:
    """`count` distinct (display name, localpart) pairs, French-sounding."""
    pairs = itertools.cycle(itertools.product(SURNAMES, FIRST_NAMES))
    chosen = []
    for index, (surname, first) in enumerate(itertools.islice(pairs, count)):
        name = f"{first} {surname}"
        localpart = _ascii(f"{first}.{surname}").lower()
        chosen.append((name, f"{localpart}.{index}"))
    random.Random(1).shuffle(chosen)
    return chosen


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c == "."))


def parallel(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Seed over a few connections: Synapse works while the client waits on another."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(work, items))


def seed(server: Homeserver, scale: Scale, progress: Callable[[str], None]) -> Seeded:
    """Fill a running server (without the guard) as months of ordinary use would."""
    rng = random.Random(7)
    progress(f"{scale.users} people in the directory")
    people = parallel(
        lambda pair: _person(server.register(pair[1], displayname=pair[0]), pair[0]),
        names(scale.users),
    )
    accounts = {person.user_id: account_of(server, person) for person in people}
    victim, *others = people
    colleagues = others[: scale.ordinary_users]
    hosts = others[scale.ordinary_users :] or others

    progress(
        f"{scale.forums} forums, {scale.forums * scale.messages} messages,"
        f" {scale.forums * scale.media} attachments"
    )
    rooms_of: dict[str, list[str]] = {person.user_id: [] for person in colleagues}

    def forum(number: int) -> tuple[str, tuple[str, ...], int]:
        topic = FORUM_TOPICS[number % len(FORUM_TOPICS)]
        title = topic if number < len(FORUM_TOPICS) else f"{topic} {number + 1}"
        host = accounts[hosts[number % len(hosts)].user_id]
        room = host.create_room(name=f"Forum {title}", topic=f"Échanges: {title}")
        members = [host] + [
            accounts[person.user_id]
            for person in random.Random(number).sample(hosts, min(4, len(hosts)))
        ]
        for member in members[1:]:
            _must(member.join(room).ok, "join a forum")
        media, size = _history(room, members, scale, random.Random(number))
        return room, media, size

    forums = parallel(forum, range(scale.forums))
    for index, colleague in enumerate(colleagues):  # two forums each, read daily
        for position in sorted({index % len(forums), (index + 1) % len(forums)}):
            room = forums[position][0]
            _must(accounts[colleague.user_id].join(room).ok, "join a forum")
            rooms_of[colleague.user_id].append(room)

    progress(f"{scale.private_rooms} private team rooms")

    def team(number: int) -> None:
        members = list(
            dict.fromkeys(colleagues[(number + k) % len(colleagues)] for k in range(3))
        )
        if number == 0:
            members.append(victim)
        owner = accounts[members[0].user_id]
        room = owner.create_room(public=False, name=f"Équipe {number + 1}")
        for member in members[1:]:
            owner.invite(room, member.user_id)
            _must(accounts[member.user_id].join(room).ok, "join a team room")
        for k in range(10):
            _send_text(accounts[members[k % len(members)].user_id], room, rng)
        for member in members:
            if member.user_id in rooms_of:
                rooms_of[member.user_id].append(room)

    if colleagues:
        for number in range(scale.private_rooms):
            team(number)
    return Seeded(
        people=tuple(people),
        forums=tuple(room for room, _, _ in forums),
        attachments={room: media for room, media, _ in forums},
        victim=victim,
        colleagues=tuple(colleagues),
        rooms_of={user: tuple(rooms) for user, rooms in rooms_of.items()},
        images=frozenset(mxc for _, media, _ in forums for mxc in media[::IMAGE_EVERY]),
        media_bytes=sum(size for _, _, size in forums),
    )


def _history(
    room: str, members: Sequence[Account], scale: Scale, rng: random.Random
) -> tuple[tuple[str, ...], int]:
    """Messages and attachments, interleaved as a forum's months of use."""
    kinds = ["text"] * scale.messages + ["media"] * scale.media
    rng.shuffle(kinds)
    media: list[str] = []
    size = 0
    for number, kind in enumerate(kinds):
        author = members[number % len(members)]
        if kind == "text":
            _send_text(author, room, rng)
            continue
        if len(media) % IMAGE_EVERY == 0:
            data, mimetype, msgtype = (
                png(40, 40, seed=rng.randrange(10**6)),
                "image/png",
                "m.image",
            )
        else:
            data = os.urandom(rng.randrange(20_000, 120_000))
            mimetype, msgtype = "application/pdf", "m.file"
        mxc = author.upload(data, mimetype)
        body = {
            "msgtype": msgtype,
            "body": f"piece-jointe-{len(media) + 1}",
            "url": mxc,
        }
        _send(author, room, body)
        media.append(mxc)
        size += len(data)
    return tuple(media), size


def _send_text(author: Account, room: str, rng: random.Random) -> None:
    _send(author, room, {"msgtype": "m.text", "body": rng.choice(SENTENCES)})


_transactions = itertools.count()


def _send(author: Account, room: str, content: dict[str, str]) -> None:
    response = author.put(
        f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/t{next(_transactions)}",
        content,
    )
    _must(response.status_code == 200, f"send: {response.text}")


def _person(account: Account, name: str) -> Person:
    return Person(account.user_id, account.localpart, name, account.token)


def account_of(server: Homeserver, person: Person) -> Account:
    """The person's seeded session, on `server` (a copy of the seeded one)."""
    return Account(server, person.user_id, person.token, "")


def _must(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"seeding failed: {what}")


def copy_server(source: Path, target: Path) -> None:
    """The seeded server's files, for a run of its own."""
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns("*.log", "*.out", "*.pid", "homeserver.yaml"),
    )
