"""A small ministry's homeserver: people in the directory, forums with history and
attachments, private team rooms. Seeded once, then copied for each run, so that the
runs with and without the guard face the very same server."""

from __future__ import annotations

import itertools
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
# The attacked homeserver, June 2026: what one account pulled out of it.
BREACH = {"users": 73_000, "forums": 600, "messages": 643_000, "media": 59_000}
# Forum sizes follow a heavy tail: the n-th largest has 1/n^TAIL of the largest, which
# holds BIGGEST of everyone; a few forums hold most members and messages.
TAIL = 0.9
BIGGEST = 0.35
READABLE_EVERY = 3  # one forum in three is readable by anyone (peekable)
SPACE_ROOMS = 4  # rooms of the ministry's public space, open to its members
SPACE_MESSAGES = 5  # in each of them

T = TypeVar("T")
R = TypeVar("R")


@attr.frozen
class Scale:
    users: int = 4000  # people in the directory, more than a day's people budget
    in_forums: int = 1000  # of whom, the people the forums' members are drawn from
    forums: int = 40
    messages: int = 1500  # text messages, over all forums, by their size
    media: int = 560  # attachments (images and documents), likewise
    private_rooms: int = 10
    ordinary_users: int = 20

    @classmethod
    def of_breach(cls, fraction: float, ordinary_users: int = 20) -> Scale:
        """The attacked homeserver at `fraction` of its size (0.1: 7,300 people)."""
        return cls(
            users=max(50, round(BREACH["users"] * fraction)),
            in_forums=max(50, round(BREACH["users"] * fraction)),
            forums=max(4, round(BREACH["forums"] * fraction)),
            messages=max(100, round(BREACH["messages"] * fraction)),
            media=max(20, round(BREACH["media"] * fraction)),
            private_rooms=max(4, round(100 * fraction)),
            ordinary_users=ordinary_users,
        )


def forum_sizes(people: int, forums: int) -> list[int]:
    """How many members each forum has, largest first."""
    return [
        max(3, round(people * BIGGEST / rank**TAIL)) for rank in range(1, forums + 1)
    ]


def shares(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (the largest rounding up)."""
    whole = sum(weights)
    split = [total * weight // whole for weight in weights]
    split[0] += total - sum(split)
    return split


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
    forums: tuple[str, ...]  # largest first
    readable: frozenset[str]  # forums anyone may read without joining
    space: str  # the ministry's public space
    space_rooms: tuple[str, ...]  # open to the space's members
    members: dict[str, int]  # room id -> how many members it has
    messages: dict[str, int]  # room id -> how many messages it holds
    attachments: dict[str, tuple[str, ...]]  # room id -> its media (mxc URIs)
    victim: Person  # the civil servant whose password was phished
    victim_rooms: tuple[str, ...]  # the public rooms it was in already
    colleagues: tuple[Person, ...]  # the ordinary users of the workload
    rooms_of: dict[str, tuple[str, ...]]  # a colleague's rooms at the start
    images: frozenset[str]  # the attachments a client shows as thumbnails
    media_bytes: int

    @property
    def public_rooms(self) -> int:
        return len(self.forums) + 1 + len(self.space_rooms)

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def total_media(self) -> int:
        return sum(len(media) for media in self.attachments.values())


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
    with ThreadPoolExecutor(6) as pool:
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
    in_forums = min(scale.in_forums, scale.users)
    hosts = others[scale.ordinary_users : in_forums] or others
    uploader = accounts[hosts[0].user_id]
    avatars = [uploader.upload(png(48, 48, seed=n), "image/png") for n in range(20)]
    parallel(
        lambda n: accounts[people[n].user_id].put(
            f"/_matrix/client/v3/profile/{quote(people[n].user_id)}/avatar_url",
            {"avatar_url": avatars[n % len(avatars)]},
        ),
        range(0, len(people), 3),  # one in three has a picture
    )

    sizes = forum_sizes(in_forums, scale.forums)
    progress(
        f"{scale.forums} forums of {sizes[0]} to {sizes[-1]} members,"
        f" {scale.messages} messages, {scale.media} attachments"
    )
    texts = shares(scale.messages, sizes)
    files = shares(scale.media, sizes)

    def create(number: int) -> str:
        topic = FORUM_TOPICS[number % len(FORUM_TOPICS)]
        title = topic if number < len(FORUM_TOPICS) else f"{topic} {number + 1}"
        host = accounts[hosts[number % len(hosts)].user_id]
        state = [_avatar_state(avatars[number % len(avatars)])]
        if number % READABLE_EVERY == 1:
            state.append(_WORLD_READABLE)
        return host.create_room(
            name=f"Forum {title}", topic=f"Échanges: {title}", initial_state=state
        )

    rooms = parallel(create, range(scale.forums))
    members: list[list[Account]] = []
    for number in range(len(rooms)):
        host = accounts[hosts[number % len(hosts)].user_id]
        others = [p for p in hosts if p.user_id != host.user_id]
        joiners = random.Random(number).sample(
            others, min(sizes[number] - 1, len(others))
        )
        members.append([host, *(accounts[person.user_id] for person in joiners)])
    parallel(
        lambda pair: _must(pair[1].join(pair[0]).ok, "join a forum"),
        [
            (room, member)
            for room, group in zip(rooms, members, strict=True)
            for member in group[1:]
        ],
    )
    histories = parallel(
        lambda number: _history(
            rooms[number],
            members[number],
            texts[number],
            files[number],
            random.Random(number),
        ),
        range(scale.forums),
    )
    forums = [
        (room, media, size)
        for room, (media, size, _) in zip(rooms, histories, strict=True)
    ]
    images: frozenset[str] = frozenset().union(*(shown for _, _, shown in histories))
    readable = frozenset(
        room
        for number, (room, _, _) in enumerate(forums)
        if number % READABLE_EVERY == 1
    )
    rooms_of: dict[str, list[str]] = {person.user_id: [] for person in colleagues}
    for colleague in colleagues:  # the largest forums, joined long ago
        for room, _, _ in forums[:3]:
            _must(accounts[colleague.user_id].join(room).ok, "join a forum")
            rooms_of[colleague.user_id].append(room)
    victim_rooms = tuple(room for room, _, _ in forums[3:5])
    for room in victim_rooms:
        _must(accounts[victim.user_id].join(room).ok, "join a forum")

    progress(f"a public space of {SPACE_ROOMS} rooms, {scale.private_rooms} team rooms")
    space, space_rooms = _space(
        accounts[hosts[0].user_id], [accounts[p.user_id] for p in hosts[1:6]], rng
    )

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
    forum_rooms = [room for room, _, _ in forums]
    return Seeded(
        people=tuple(people),
        forums=tuple(forum_rooms),
        readable=readable,
        space=space,
        space_rooms=tuple(space_rooms),
        members={room: size for room, size in zip(forum_rooms, sizes, strict=True)},
        messages={
            **{
                room: text + attached
                for room, text, attached in zip(forum_rooms, texts, files, strict=True)
            },
            **dict.fromkeys(space_rooms, SPACE_MESSAGES),
        },
        attachments={room: media for room, media, _ in forums},
        victim=victim,
        victim_rooms=victim_rooms,
        colleagues=tuple(colleagues),
        rooms_of={user: tuple(rooms) for user, rooms in rooms_of.items()},
        images=images,
        media_bytes=sum(size for _, _, size in forums),
    )


_WORLD_READABLE: dict[str, object] = {
    "type": "m.room.history_visibility",
    "state_key": "",
    "content": {"history_visibility": "world_readable"},
}


def _avatar_state(mxc: str) -> dict[str, object]:
    return {"type": "m.room.avatar", "state_key": "", "content": {"url": mxc}}


def _space(
    owner: Account, members: Sequence[Account], rng: random.Random
) -> tuple[str, list[str]]:
    """The ministry's public space, and rooms open to anyone in it (restricted)."""
    space = owner.create_room(
        name="Espace ministère", creation_content={"type": "m.space"}
    )
    rooms = []
    for number in range(SPACE_ROOMS):
        room = owner.create_room(
            public=False,
            room_version="10",
            name=f"Groupe de travail {number + 1}",
            initial_state=[
                {
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": space}],
                    },
                }
            ],
        )
        owner.put(
            f"/_matrix/client/v3/rooms/{quote(space)}/state/m.space.child/{quote(room)}",
            {"via": [owner.user_id.split(":", 1)[1]]},
        )
        for member in members:
            _must(member.join(space).ok and member.join(room).ok, "join the space")
        for k in range(SPACE_MESSAGES):
            _send_text(members[k % len(members)], room, rng)
        rooms.append(room)
    return space, rooms


def _history(
    room: str,
    members: Sequence[Account],
    texts: int,
    files: int,
    rng: random.Random,
) -> tuple[tuple[str, ...], int, frozenset[str]]:
    """Messages and attachments, interleaved as a forum's months of use; a large
    forum's over a few connections at once."""
    kinds = ["text"] * texts + ["media"] * files
    rng.shuffle(kinds)
    plan = [
        (members[number % len(members)], kind, rng.randrange(10**6), number)
        for number, kind in enumerate(kinds)
    ]

    def post(item: tuple[Account, str, int, int]) -> tuple[str, int, bool] | None:
        author, kind, draw, number = item
        local = random.Random(draw)
        if kind == "text":
            _send(author, room, {"msgtype": "m.text", "body": local.choice(SENTENCES)})
            return None
        if number % IMAGE_EVERY == 0:
            data, mimetype, msgtype = png(40, 40, seed=draw), "image/png", "m.image"
        else:
            data = local.randbytes(local.randrange(20_000, 120_000))
            mimetype, msgtype = "application/pdf", "m.file"
        mxc = author.upload(data, mimetype)
        _send(
            author,
            room,
            {"msgtype": msgtype, "body": f"piece-jointe-{number}", "url": mxc},
        )
        return mxc, len(data), msgtype == "m.image"

    if len(plan) > 50:
        with ThreadPoolExecutor(4) as pool:
            posted = list(pool.map(post, plan))
    else:
        posted = [post(item) for item in plan]
    media = [item for item in posted if item is not None]
    return (
        tuple(mxc for mxc, _, _ in media),
        sum(size for _, size, _ in media),
        frozenset(mxc for mxc, _, image in media if image),
    )


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
