"""The local file formats: readers that check every line, and writers for the same formats.

CoNLL-U (UD), XTREME's PAN-X token TSV (WikiANN), premise/hypothesis/label TSV (MultiNLI, XNLI),
two line-aligned files (parallel corpora) and MUSE dictionaries: the layout of `../shared/data`
(docs/architecture.md, "Data dir"). `trainables.data` reads local sources with these; `toyworld`
writes its generated data with the writers, so each reader reads back what its writer wrote.
A file that breaks its format is one `DataSourceError` line naming the file and the line.

Kept apart from `trainables.data` (sources, hub revisions, caching) so that what the toy world's
cache key fingerprints (`toyworld.CODE_FILES`) is only the code its files are made and read by.
"""
from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

# The label sets belong to the tasks (trainables/tasks.py); the readers check against the set of
# the task that reads them, these being the formats' own tag sets by default.
from trainables.tasks import MULTIWORD_LABEL, NLI_LABELS, UPOS_TAGS, WIKIANN_TAGS

log = logging.getLogger(__name__)

NLI_HEADER = ("premise", "hypothesis", "label")


class DataSourceError(FileNotFoundError, ValueError):
    """A data source could not be read locally nor fetched remotely (one line, names the file)."""


# --- readers for the local formats --------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are one error naming the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as error:  # a folder, no permission...: still one line naming the file
        raise DataSourceError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataSourceError(
            f"{path}:{line}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {column})"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not content


def read_lines(path: Path) -> list[str]:
    """Lines split on "\\n" only (str.splitlines also splits on U+2028 etc. and would misalign)."""
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    return [line.rstrip("\r") for line in text.split("\n")] if text else []


CONLLU_COLUMNS = 10  # ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC
_CONLLU_WORD_ID = re.compile(r"[1-9][0-9]*")
_CONLLU_OTHER_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*|[0-9]+\.[1-9][0-9]*")  # ranges, empty nodes


def read_conllu(
    path: Path, labels: Sequence[str] = UPOS_TAGS, multiword_tokens: bool = False
) -> list[dict[str, list]]:
    """Sentences of a CoNLL-U file as {"words", "labels"} with UPOS labels.

    Multiword-token lines (ids that are ranges, e.g. "6-7") and empty nodes (ids like "8.1") are
    skipped by default: the syntactic words carry the tags. With `multiword_tokens`, every line is
    a word, in file order, as the hub's universal_dependencies loader gave them to the reference:
    a range gets the label "_" (its UPOS column), an empty node its UPOS, and a "syntactic" list
    marks the ordinary words (True) apart from ranges and empty nodes (False), so that
    `trainables.tasks.preprocess_ud` can keep either reading. Every token line is checked (10
    tab-separated columns, a valid ID, a UPOS tag among `labels`, the reading task's label set);
    a file that does not end with a blank line keeps its last sentence.
    """
    allowed = frozenset(labels)

    def word_and_tag(number: int, line: str) -> tuple[str, str, bool] | None:
        if line.startswith("#"):
            return None
        columns = line.split("\t")
        if len(columns) != CONLLU_COLUMNS:
            raise DataSourceError(
                f"{path}:{number}: expected {CONLLU_COLUMNS} tab-separated CoNLL-U columns, got {len(columns)}"
            )
        token_id, form, upos = columns[0], columns[1], columns[3]
        if _CONLLU_OTHER_ID.fullmatch(token_id):
            if not multiword_tokens:
                return None
            if "-" in token_id:
                return form, MULTIWORD_LABEL, False
            syntactic = False
        elif _CONLLU_WORD_ID.fullmatch(token_id):
            syntactic = True
        else:
            raise DataSourceError(f"{path}:{number}: ID {token_id!r} is not a word index, range or empty node")
        if upos not in allowed:
            raise DataSourceError(
                f"{path}:{number}: word {form!r} has UPOS {upos!r}, expected one of {' '.join(sorted(allowed))}"
            )
        return form, upos, syntactic

    return _tagged_sentences(path, word_and_tag, mark_syntactic=multiword_tokens)


def read_token_tsv(path: Path, lang: str, labels: Sequence[str] = WIKIANN_TAGS) -> list[dict[str, list[str]]]:
    """XTREME's PAN-X format: `token<TAB>IOB2 tag` lines, a blank line between sentences; every
    tag must be among `labels`, the reading task's label set.

    XTREME's raw files prefix tokens with the language ("en:Paris"); that prefix is removed.
    """
    prefix = f"{lang}:"
    allowed = frozenset(labels)

    def word_and_tag(number: int, line: str) -> tuple[str, str]:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataSourceError(
                f"{path}:{number}: expected 'token<TAB>tag', got {len(fields)} tab-separated fields"
            )
        token, tag = fields
        if not token.strip():
            raise DataSourceError(f"{path}:{number}: empty token before the tag {tag!r}")
        if tag not in allowed:
            raise DataSourceError(f"{path}:{number}: tag {tag!r} is not one of {' '.join(labels)}")
        return (token[len(prefix):] if token.startswith(prefix) else token), tag

    return _tagged_sentences(path, word_and_tag)


def _tagged_sentences(
    path: Path, word_and_tag: Callable[[int, str], tuple | None], mark_syntactic: bool = False
) -> list[dict[str, list]]:
    """Sentences of a one-token-a-line file, a blank line between sentences (CoNLL-U, PAN-X):
    `word_and_tag(line_number, line)` parses a line into (word, tag) or (word, tag, syntactic)
    (None: a line that holds no word); `mark_syntactic` keeps the third item as a "syntactic"
    list. A file that does not end with a blank line keeps its last sentence."""
    examples: list[dict[str, list]] = []
    sentence: list[tuple] = []

    def close() -> None:
        example = {"words": [p[0] for p in sentence], "labels": [p[1] for p in sentence]}
        if mark_syntactic:
            example["syntactic"] = [p[2] for p in sentence]
        examples.append(example)

    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if sentence:
                close()
                sentence = []
            continue
        parsed = word_and_tag(number, line)
        if parsed is not None:
            sentence.append(parsed)
    if sentence:
        close()
    return examples


def read_nli_tsv(path: Path, labels: Sequence[str] = NLI_LABELS) -> list[dict[str, str]]:
    """`premise<TAB>hypothesis<TAB>label` lines (an optional header line is skipped); every label
    must be among `labels`, the reading task's label set."""
    allowed = frozenset(labels)
    examples = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataSourceError(
                f"{path}:{number}: expected 'premise<TAB>hypothesis<TAB>label', got {len(fields)} fields"
            )
        if number == 1 and tuple(f.strip().lower() for f in fields) == NLI_HEADER:
            continue
        premise, hypothesis, label = fields
        if label not in allowed:
            raise DataSourceError(f"{path}:{number}: label {label!r} is not one of {', '.join(labels)}")
        examples.append({"premise": premise, "hypothesis": hypothesis, "label": label})
    return examples


def iter_line_aligned(en_path: Path, x_path: Path) -> Iterator[tuple[str, str]]:
    """(English line, other line) pairs of two line-aligned files, read line by line (memory
    bounded by one line, whatever the files' size). Lines end at "\\n" only (as `read_lines`);
    a line that is not UTF-8, or files of different lengths, are one error naming the file and
    the line."""
    handles = []
    try:
        for path in (en_path, x_path):
            try:
                handles.append(open(path, "rb"))
            except OSError as error:
                raise DataSourceError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
        en_file, x_file = handles
        number = 0
        for number, raw in enumerate(itertools.zip_longest(en_file, x_file), start=1):
            if raw[0] is None or raw[1] is None:
                # Count the longer file's rest (streamed) to name both lengths.
                rest = 1 + sum(1 for _ in (x_file if raw[0] is None else en_file))
                en_count, x_count = (number - 1, number - 1 + rest) if raw[0] is None else (number - 1 + rest, number - 1)
                raise DataSourceError(f"{en_path} has {en_count} lines but {x_path} has {x_count}: "
                                      "a parallel corpus needs line-aligned files")
            yield _decode_line(en_path, number, raw[0]), _decode_line(x_path, number, raw[1])
    finally:
        for handle in handles:
            handle.close()


def _decode_line(path: Path, number: int, raw: bytes) -> str:
    """One line of a text file without its line ending; bytes that are not UTF-8 name the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataSourceError(
            f"{path}:{number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
        ) from None
    if number == 1 and text.startswith("\ufeff"):  # a byte-order mark is not content
        text = text[1:]
    return text.removesuffix("\n").removesuffix("\r")


def read_line_aligned(en_path: Path, x_path: Path) -> list[tuple[str, str]]:
    """A parallel corpus as two line-aligned files; English first in each pair."""
    return list(iter_line_aligned(en_path, x_path))


# A dictionary whose lines are mostly not two fields is not a MUSE file (a wrong or damaged file),
# whereas the published MUSE files have a few irregular lines that the reference skips.
MUSE_MAX_MALFORMED_SHARE = 0.01


def read_muse(path: Path) -> list[tuple[str, str]]:
    """MUSE dictionary entries `source<TAB or space>target`, one per line.

    Lines that do not have exactly two fields are skipped with a warning, as the paper's code
    did (multilingual_eval/data.py, `get_dicos`: MUSE's published files are tab- or
    space-separated, a few lines are irregular). More than `MUSE_MAX_MALFORMED_SHARE` of such
    lines is an error naming the first one.
    """
    entries: list[tuple[str, str]] = []
    malformed: list[tuple[int, int]] = []  # (line number, number of fields)
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 2 or not all(fields):
            malformed.append((number, len(fields)))
            continue
        entries.append((fields[0], fields[1]))
    if malformed:
        total = len(malformed) + len(entries)
        number, n_fields = malformed[0]
        if len(malformed) > MUSE_MAX_MALFORMED_SHARE * total:
            raise DataSourceError(
                f"{path}:{number}: expected 'source<TAB or space>target', got {n_fields} fields "
                f"({len(malformed)} of {total} lines are malformed)"
            )
        log.warning("%s: skipped %d malformed lines (first: line %d)", path, len(malformed), number)
    return entries


# --- writers for the same formats: each reader above reads back what its writer wrote ----------


def _check_field(path: Path, item: int, name: str, value: str) -> str:
    """A field of a tab/line format: a tab or a line break inside it would shift the columns."""
    if not isinstance(value, str) or not value or any(c in value for c in "\t\n\r"):
        raise ValueError(f"{path}: item {item}: {name} {value!r} must be a non-empty string without tabs or line breaks")
    return value


def _write_lines(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def write_conllu(path: Path, sentences: Iterable[dict[str, Any]]) -> Path:
    """Sentences as CoNLL-U, the format `read_conllu` reads.

    Each sentence has "words" and "labels" (UPOS), and optionally "lemmas", "feats", "heads"
    (1-based, 0 = root; default: every word attached to the first), "deprels", "space_after"
    (bools; the MISC column gets UD's ``SpaceAfter=No``), "sent_id" and "text" (comment lines).
    """
    blocks = []
    for item, sentence in enumerate(sentences):
        words, labels = sentence["words"], sentence["labels"]
        n = len(words)
        if n == 0 or len(labels) != n:
            raise ValueError(f"{path}: sentence {item}: {n} words and {len(labels)} labels (need as many, at least one)")
        for label in labels:
            if label not in UPOS_TAGS:
                raise ValueError(f"{path}: sentence {item}: UPOS {label!r} is not one of {' '.join(sorted(UPOS_TAGS))}")
        columns = {
            "lemmas": sentence.get("lemmas") or ["_"] * n,
            "feats": sentence.get("feats") or ["_"] * n,
            "heads": sentence.get("heads") or [0] + [1] * (n - 1),
            "deprels": sentence.get("deprels") or ["root"] + ["dep"] * (n - 1),
            "space_after": sentence.get("space_after") or [True] * n,
        }
        for name, values in columns.items():
            if len(values) != n:
                raise ValueError(f"{path}: sentence {item}: {len(values)} {name} for {n} words")
        lines = [f"# {key} = {sentence[key]}" for key in ("sent_id", "text") if sentence.get(key)]
        for i in range(n):
            misc = "_" if columns["space_after"][i] or i + 1 == n else "SpaceAfter=No"
            fields = (str(i + 1), words[i], columns["lemmas"][i], labels[i], "_", columns["feats"][i],
                      str(columns["heads"][i]), columns["deprels"][i], "_", misc)
            for name, value in zip(("form", "lemma", "feats", "deprel"), (fields[1], fields[2], fields[5], fields[7])):
                _check_field(path, item, name, value)
            lines.append("\t".join(fields))
        blocks.append("\n".join(lines) + "\n\n")
    return _write_lines(path, "".join(blocks))


def write_token_tsv(path: Path, examples: Iterable[dict[str, Sequence[str]]]) -> Path:
    """`token<TAB>tag` lines with a blank line after each sentence, the format `read_token_tsv` reads."""
    blocks = []
    for item, example in enumerate(examples):
        words, labels = example["words"], example["labels"]
        if not words or len(words) != len(labels):
            raise ValueError(f"{path}: sentence {item}: {len(words)} tokens and {len(labels)} tags (need as many, at least one)")
        for tag in labels:
            if tag not in WIKIANN_TAGS:
                raise ValueError(f"{path}: sentence {item}: tag {tag!r} is not one of {' '.join(WIKIANN_TAGS)}")
        blocks.append("".join(f"{_check_field(path, item, 'token', w)}\t{t}\n" for w, t in zip(words, labels)) + "\n")
    return _write_lines(path, "".join(blocks))


def write_nli_tsv(path: Path, examples: Iterable[dict[str, str]]) -> Path:
    """`premise<TAB>hypothesis<TAB>label` lines, no header, the format `read_nli_tsv` reads."""
    lines = []
    for item, example in enumerate(examples):
        if example["label"] not in NLI_LABELS:
            raise ValueError(f"{path}: item {item}: label {example['label']!r} is not one of {', '.join(NLI_LABELS)}")
        premise = _check_field(path, item, "premise", example["premise"])
        hypothesis = _check_field(path, item, "hypothesis", example["hypothesis"])
        lines.append(f"{premise}\t{hypothesis}\t{example['label']}\n")
    return _write_lines(path, "".join(lines))


def write_line_aligned(en_path: Path, x_path: Path, pairs: Iterable[tuple[str, str]]) -> tuple[Path, Path]:
    """A parallel corpus as two line-aligned files, the format `read_line_aligned` reads."""
    en_lines, x_lines = [], []
    for item, (en, x) in enumerate(pairs):
        en_lines.append(_check_field(en_path, item, "line", en) + "\n")
        x_lines.append(_check_field(x_path, item, "line", x) + "\n")
    return _write_lines(en_path, "".join(en_lines)), _write_lines(x_path, "".join(x_lines))


def write_muse(path: Path, entries: Iterable[tuple[str, str]]) -> Path:
    """`source<TAB>target` dictionary lines, the format `read_muse` reads."""
    lines = []
    for item, (source, target) in enumerate(entries):
        for name, word in (("source", source), ("target", target)):
            if not isinstance(word, str) or not word or any(c.isspace() for c in word):
                raise ValueError(f"{path}: entry {item}: {name} {word!r} must be one word (no whitespace)")
        lines.append(f"{source}\t{target}\n")
    return _write_lines(path, "".join(lines))
