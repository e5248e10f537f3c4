"""Source 1 for ML-100K: the official GroupLens zip, converted to RecBole atomic files."""

from __future__ import annotations

import io
import urllib.request
import zipfile

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
DOWNLOAD_TIMEOUT_S = 10.0
ZIP_FOLDER = "ml-100k"
RAW_ENCODING = "latin-1"   # u.item is ISO-8859-1; the atomic files are UTF-8
FIELD_SEP = "|"
#: RecBole writes this (sic) for a title without a "(year)" suffix.
MISSING = "unkonwn"
#: u.item columns before the 19 genre flags: id, title, release date, video date, URL.
ITEM_FIXED_FIELDS = 5
#: Genre order of u.genre, used when the zip has no u.genre.
DEFAULT_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"


def download_grouplens(timeout: float = DOWNLOAD_TIMEOUT_S) -> dict[str, bytes]:
    """Download the GroupLens zip and return the three atomic files by name."""
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:  # noqa: S310
        payload = response.read()
    return convert_zip(payload)


def convert_zip(payload: bytes) -> dict[str, bytes]:
    """Convert the bytes of ``ml-100k.zip`` into RecBole atomic files."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        def member(name: str) -> str:
            return archive.read(f"{ZIP_FOLDER}/{name}").decode(RAW_ENCODING)

        names = set(archive.namelist())
        genre_file = f"{ZIP_FOLDER}/u.genre"
        genres = parse_genres(member("u.genre")) if genre_file in names else list(DEFAULT_GENRES)
        return {
            "ml-100k.inter": convert_data(member("u.data")).encode("utf-8"),
            "ml-100k.item": convert_items(member("u.item"), genres).encode("utf-8"),
            "ml-100k.user": convert_users(member("u.user")).encode("utf-8"),
        }


def _joined(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows]) + "\n"


def parse_genres(text: str) -> list[str]:
    """Genre names of ``u.genre`` ordered by their flag position."""
    pairs = [line.rsplit(FIELD_SEP, 1) for line in text.splitlines() if line.strip()]
    return [name for name, _ in sorted(pairs, key=lambda pair: int(pair[1]))]


def convert_data(text: str) -> str:
    """``u.data`` (user, item, rating, timestamp, tab separated) -> ``.inter``."""
    return _joined(INTER_HEADER, [line for line in text.splitlines() if line])


def split_title(raw_title: str) -> tuple[str, str]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``; last parenthesised suffix is the year."""
    title = raw_title.strip()
    if title.endswith(")") and " (" in title:
        head, year = title[:-1].rsplit(" (", 1)
        return head, year
    if not title or title.lower() == "unknown":
        return MISSING, MISSING
    return title, MISSING


def convert_items(text: str, genres: list[str]) -> str:
    """``u.item`` (pipe separated, genre flags) -> ``.item`` (title, year, genres)."""
    rows = []
    for line in text.splitlines():
        if not line:
            continue
        fields = line.split(FIELD_SEP)
        flags = fields[ITEM_FIXED_FIELDS:]
        title, year = split_title(fields[1])
        names = [genre for genre, flag in zip(genres, flags) if flag.strip() == "1"]
        rows.append("\t".join([fields[0], title, year, " ".join(names)]))
    return _joined(ITEM_HEADER, rows)


def convert_users(text: str) -> str:
    """``u.user`` (pipe separated) -> ``.user`` (tab separated)."""
    rows = [line.replace(FIELD_SEP, "\t") for line in text.splitlines() if line]
    return _joined(USER_HEADER, rows)
