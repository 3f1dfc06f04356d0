"""A rich Table kept on a terminal at the cost of what changed: each cell is rendered once per (text, style,
width) and remembered, the column widths once per set of cell widths, and a frame rewrites only the lines that
differ from those on screen. What it prints is rich's own rendering of the same Table, line for line (the
tests compare them); redrawing the whole Table per frame was what ``csd watch`` spent its time on.

Limits, checked at construction: a table with a box, its edge, a header, no footer, no lines between rows,
no row styles, padding on every edge and uncollapsed (as ``csd.render`` builds it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from rich.console import RenderHook
from rich.cells import cell_len
from rich.control import Control
from rich.file_proxy import FileProxy
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import ControlType, Segment
from rich.style import Style
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console, ConsoleRenderable, RenderableType
    from rich.table import Column, Table

#: One cell as the caller describes it, (text, style); the column's maker turns it into what rich renders.
Cell = tuple[str, str]
Maker = Callable[[str, str], "RenderableType"]
Edges = tuple[str, str, str]  # a row's left edge, column divider, right edge (terminal text)
#: Cells, and rows, remembered before those caches start over (a long watch sees many texts and rows; the next
#: frame refills them). A remembered row costs ~1 KB: at 4000 the caches stay within a few MB.
CELL_CACHE_LIMIT = 20_000
ROW_CACHE_LIMIT = 4_000


class TableLines:
    """The lines (terminal text with its escape codes) that rich prints for ``template`` — a Table with its
    columns and settings but no rows — given a title, a caption and rows of cells, at a width."""

    def __init__(self, console: Console, template: Table, makers: Sequence[Maker]) -> None:
        t = template
        if not (t.box and t.show_edge and t.show_header) or t.show_footer or t.show_lines or t.leading \
                or t.row_styles or t.collapse_padding or not t.pad_edge or len(makers) != len(t.columns):
            raise ValueError("TableLines draws only a boxed table with edge and header and plain rows")
        self.console, self.template, self.makers = console, template, tuple(makers)
        get = console.get_style
        self._header_style = get(t.header_style or "")
        self._styles = [(self._header_style + get(c.header_style or ""), get(c.style or "")) for c in t.columns]
        self._border = get(t.style or "") + get(t.border_style or "")
        self._cells: dict[tuple[int, Cell, int], list[str]] = {}  # one cell's lines at a width
        self._measures: dict[tuple[tuple[Cell, ...], int], tuple[int, ...]] = {}  # a row's cells measured
        self._cell_measures: dict[tuple[int, Cell, int], tuple[int, int]] = {}  # one cell's (widest word, width)
        self._rows: dict[tuple[int, ...], dict[tuple[Cell, ...], list[str]]] = {}  # a row's lines, per widths
        self._widths: dict[tuple[int, tuple[int, ...]], tuple[int, ...]] = {}
        self._notes: dict[tuple[str, str, int], list[str]] = {}
        self._boxes: dict[tuple[int, ...], tuple[str, list[str], str, Edges, Edges, str]] = {}
        self._wraps: dict[str, tuple[str, str]] = {}  # a style's codes before and after a text

    def lines(self, title: str, caption: str, rows: Sequence[tuple[Cell, ...]], width: int) -> list[str]:
        """The table's lines at most ``width`` columns wide, as rich would print them."""
        self.trim()
        measured = [self.measure(row, width) for row in rows]
        widths = self.widths(rows, measured, width)
        if widths is None:
            return self.cropped(title, caption, rows, width)
        return self.assemble(title, caption, [self.row_lines(row, widths, n == len(rows) - 1) for n, row in enumerate(rows)],
                             widths, width)

    def trim(self) -> None:
        """Start the caches over once they hold too much (a long watch sees many texts and rows)."""
        if len(self._measures) > ROW_CACHE_LIMIT:
            self._measures.clear()
            self._rows.clear()
        if len(self._cells) + len(self._cell_measures) > CELL_CACHE_LIMIT:
            for cache in (self._cells, self._cell_measures, self._rows, self._widths, self._notes, self._boxes):
                cache.clear()

    def assemble(self, title: str, caption: str, body: Sequence[list[str]], widths: tuple[int, ...], width: int) -> list[str]:
        """The table's lines around ``body``: each row's lines (``row_lines``) at ``widths`` (``widths``)."""
        table_width = sum(widths) + self.template._extra_width
        top, header, head, _, _, bottom = self._chrome(widths)
        out = [*self._note(title, "title", table_width), top, *header, head] if title else [top, *header, head]
        for lines in body:
            out += lines
        out.append(bottom)
        return out + self._note(caption, "caption", table_width) if caption else out

    def _chrome(self, widths: tuple[int, ...]) -> tuple[str, list[str], str, Edges, Edges, str]:
        """The lines around the rows and the edges of a row, per set of widths: (top, header lines, the line
        under the header, a row's edges, the last row's edges, bottom)."""
        got = self._boxes.get(widths)
        if got is None:
            box = self.template.box
            assert box is not None
            safe = self.template.safe_box if self.template.safe_box is not None else self.console.safe_box
            box = box.substitute(self.console.options, safe=safe)  # by its encoding, not its width
            line = self._border_text
            headers = tuple((c.header, "") for c in self.template.columns)
            header = self._row(headers, widths, (line(box.head_left), line(box.head_vertical), line(box.head_right)), True)
            got = self._boxes[widths] = (
                line(box.get_top(list(widths))), header, line(box.get_row(list(widths), "head", edge=True)),
                (line(box.mid_left), line(box.mid_vertical), line(box.mid_right)),
                (line(box.foot_left), line(box.foot_vertical), line(box.foot_right)), line(box.get_bottom(list(widths))))
        return got

    def _border_text(self, text: str) -> str:
        return self._ansi([Segment(text, self._border)])

    # -- widths

    def widths(self, rows: Sequence[tuple[Cell, ...]], measured: Sequence[tuple[int, ...]], width: int) -> tuple[int, ...] | None:
        """rich's column widths for these rows (``measured``: each one's ``measure``), or None when the table is
        wider than ``width`` even shrunk (a long unbreakable cell: see ``cropped``). They depend only on each
        column's widest cell and widest word, so they are computed (by rich, on a table of those cells) once per
        such set."""
        n = len(self.makers)
        # many rows measure alike: the maxima of the distinct measures are theirs (a tenth of the work at 50 rows)
        most = tuple(map(max, zip(*set(measured)))) if measured else (0,) * 2 * n
        key = (width, most)
        widths = self._widths.get(key)
        if widths is None:
            # one row of the cells with the widest words, one of the widest cells
            extremes = [[next(row[i] for row, m in zip(rows, measured) if m[i + k] == most[i + k]) for i in range(n)]
                        for k in (0, n)] if rows else []
            proxy = self._table(extremes)
            options = self.console.options.update_width(width - proxy._extra_width)
            widths = self._widths[key] = tuple(proxy._calculate_column_widths(self.console, options))
        return widths if sum(widths) + self.template._extra_width <= width else None

    def measure(self, row: tuple[Cell, ...], width: int) -> tuple[int, ...]:
        """(each cell's widest word..., each cell's width...) of a row."""
        key = (row, width)
        m = self._measures.get(key)
        if m is None:
            each = [self._cell_measures.get((i, cell, width)) or self._measure(i, cell, width) for i, cell in enumerate(row)]
            m = self._measures[key] = tuple(lo for lo, _ in each) + tuple(hi for _, hi in each)
        return m

    def _measure(self, i: int, cell: Cell, width: int) -> tuple[int, int]:
        options = self.console.options.update_width(width - self.template._extra_width)
        got = Measurement.get(self.console, options, Padding(self.makers[i](*cell), self.template.padding))
        m = self._cell_measures[(i, cell, width)] = (got.minimum, got.maximum)
        return m

    def _table(self, rows: Sequence[Sequence[Cell | None]]) -> Table:
        """A copy of the template holding ``rows``."""
        from copy import deepcopy

        table = deepcopy(self.template)
        for row in rows:
            table.add_row(*(self.makers[i](*cell) if cell is not None else "" for i, cell in enumerate(row)))
        return table

    def cropped(self, title: str, caption: str, rows: Sequence[tuple[Cell, ...]], width: int) -> list[str]:
        """The table rendered whole by rich, its lines cut at ``width`` (the rare table that does not fit)."""
        table = self._table(rows)
        table.title, table.caption = title or None, caption or None
        segments = self.console.render(table, self.console.options.update_width(width))
        return [self._ansi(line) for line in Segment.split_and_crop_lines(segments, width, pad=False, include_new_lines=False)]

    # -- lines

    def row_lines(self, row: tuple[Cell, ...], widths: tuple[int, ...], last: bool = False) -> list[str]:
        """A body row's lines at ``widths`` (``last``: the table's last row, whose edges are the box's foot)."""
        mid, foot = self._chrome(widths)[3:5]
        if last and foot != mid:
            return self._row(row, widths, foot)
        body = self._rows.get(widths)
        if body is None:
            body = self._rows[widths] = {}
        lines = body.get(row)
        if lines is None:
            lines = body[row] = self._row(row, widths, mid)
        return lines

    # -- a row redrawn from its last version (csd.render.LiveView): the cells it shares with it are not looked up

    def measure_again(self, row: tuple[Cell, ...], width: int, old: tuple[Cell, ...] | None,
                      old_each: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
        """(each cell's (widest word, width), the row's ``measure``); a cell equal to ``old``'s (the row as last
        measured at this width, or None) keeps its measure from ``old_each``."""
        each = [old_each[i] if old is not None and old[i] == cell else
                self._cell_measures.get((i, cell, width)) or self._measure(i, cell, width) for i, cell in enumerate(row)]
        return each, tuple(lo for lo, _ in each) + tuple(hi for _, hi in each)

    def lines_again(self, row: tuple[Cell, ...], widths: tuple[int, ...], old: tuple[Cell, ...] | None,
                    old_cells: Sequence[list[str]], last: bool = False) -> tuple[list[list[str]], list[str]]:
        """(each cell's lines, the row's lines: ``row_lines``); a cell equal to ``old``'s (the row as last drawn at
        these widths, or None) keeps its lines from ``old_cells``."""
        cells = [old_cells[i] if old is not None and old[i] == cell else self._cell(i, cell, w, False)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        mid, foot = self._chrome(widths)[3:5]
        return cells, self._join(cells, widths, foot if last else mid)

    def _row(self, row: Sequence[Cell | tuple[RenderableType, str]], widths: tuple[int, ...], edges: Edges,
             header: bool = False) -> list[str]:
        return self._join([self._cell(i, cell, w, header) for i, (cell, w) in enumerate(zip(row, widths))], widths,
                          edges, header)

    def _join(self, cells: list[list[str]], widths: tuple[int, ...], edges: Edges, header: bool = False) -> list[str]:
        """A row's lines from its cells' lines."""
        left, middle, right = edges
        height = max(len(c) for c in cells)
        if height > 1:  # a cell wrapped (a narrow terminal): rich aligns the cells of the row
            cells = [self._align(i, c, w, height, header) for i, (c, w) in enumerate(zip(cells, widths))]
        return [left + middle.join(c[n] for c in cells) + right for n in range(height)]

    def _cell(self, i: int, cell: Cell | tuple[RenderableType, str], width: int, header: bool) -> list[str]:
        """The cell's lines, rendered as the table renders it, padding included."""
        key = (i, cell if not header else ("\0header", ""), width)
        lines = self._cells.get(key)
        if lines is None:
            column: Column = self.template.columns[i]
            renderable = column.header if header else self.makers[i](*cell)  # type: ignore[arg-type]
            options = self.console.options.update(
                width=width, justify=column.justify, no_wrap=column.no_wrap, overflow=column.overflow, height=None,
                highlight=getattr(column, "highlight", self.template.highlight))
            style = self._styles[i][0 if header else 1]
            rendered = self.console.render_lines(Padding(renderable, self.template.padding), options, style=style)
            lines = self._cells[key] = [self._ansi(Segment.adjust_line_length(line, width)) for line in rendered]
        return lines

    def _align(self, i: int, lines: list[str], width: int, height: int, header: bool) -> list[str]:
        """Blank lines added as rich adds them: under a body cell, over a header cell."""
        style = self._styles[i][0 if header else 1]
        blank = self._ansi([Segment(" " * width, style)])
        pad = [blank] * (height - len(lines))
        return pad + lines if header else lines + pad

    def _note(self, text: str, kind: str, table_width: int) -> list[str]:
        """The title or the caption, as the table renders it (at the table's width)."""
        key = (text, kind, table_width)
        lines = self._notes.get(key)
        if lines is None:
            t = self.template
            style = Style.pick_first(t.title_style if kind == "title" else t.caption_style, f"table.{kind}")
            justify = t.title_justify if kind == "title" else t.caption_justify
            rendered = self.console.render_str(text, style=style, highlight=False)
            plain = rendered.plain
            if justify == "left" and not rendered.spans and "\n" not in plain and cell_len(plain) <= table_width:
                # one line of one style, padded: what rich's wrapping and justifying come to (the caption changes
                # every frame; that machinery was most of a frame)
                pad = " " * (table_width - cell_len(plain))
                return [self._styled(plain + pad, rendered.style)]
            options = self.console.options.update(width=table_width, highlight=t.highlight, height=None, justify=justify)
            segments = self.console.render(rendered, options)
            lines = self._notes[key] = [self._ansi(line) for line in Segment.split_lines(segments)]
        return lines

    def _styled(self, text: str, style: str | Style) -> str:
        """``text`` in ``style`` as ``_ansi`` writes it: the style's codes, worked out once, around the text."""
        key = str(style)
        got = self._wraps.get(key)
        if got is None:
            # rich renders a styled text as its codes, the text, the reset (or the bare text without colours)
            before, _, after = self._ansi([Segment("\0", self.console.get_style(style))]).partition("\0")
            got = self._wraps[key] = (before, after)
        return got[0] + text + got[1] if text else ""

    def _ansi(self, segments: Sequence[Segment]) -> str:
        return self.console._render_buffer(segments)


class Screen(RenderHook):
    """Lines kept just above the cursor of a terminal, rewritten only where they changed. While it is shown,
    whatever else goes to the console or to stderr is printed above it (as rich's Live does)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lines: list[str] = []
        self._width = 0  # the terminal's width when the lines were drawn

    def show(self, lines: list[str], width: int, height: int) -> None:
        """Make the screen show ``lines`` on a terminal of that size (cropped to its height)."""
        if len(lines) >= height:
            lines = lines[: max(height - 2, 0)] + ["..."]
        old, self._lines = self._lines, lines
        resized, self._width = width != self._width, width
        if len(old) != len(lines) or resized:  # a resized terminal may have moved the old lines: all anew
            out = (f"\r\x1b[{len(old)}A" if old else "") + "\x1b[J" + "".join(line + "\n" for line in lines)
        else:
            # up to the line, erase it, write it, back down: the cursor stays under the table
            out = "".join(f"\x1b[{len(old) - n}A\r\x1b[2K{new}\x1b[{len(old) - n}B\r"
                          for n, (was, new) in enumerate(zip(old, lines)) if was != new)
        if out:
            self.console.file.write(out)
            self.console.file.flush()

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        """Something else is printed: erase the table, print that, then the table again under it."""
        erase = Control(ControlType.CARRIAGE_RETURN, (ControlType.ERASE_IN_LINE, 2),
                        *(((ControlType.CURSOR_UP, 1), (ControlType.ERASE_IN_LINE, 2)) * len(self._lines)))
        return [erase, *renderables, *(Text.from_ansi(line) for line in self._lines)]


@contextlib.contextmanager
def terminal_size(console: Console) -> Iterator[Callable[[], tuple[int, int]]]:
    """A function giving the terminal's (width, height), asked of the terminal again only after it was resized
    (SIGWINCH): rich's ``console.size`` makes two system calls a time, and a watch draws many frames a second.
    Where the loop cannot take signals (not the main thread, no running loop), every call asks."""
    size: list[tuple[int, int]] = []

    def get() -> tuple[int, int]:
        if not size:
            size.append(tuple(console.size))  # type: ignore[arg-type]
        return size[0]

    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGWINCH, size.clear)
    except (RuntimeError, NotImplementedError, ValueError):
        yield lambda: tuple(console.size)  # type: ignore[return-value]
        return
    try:
        yield get
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


@contextlib.contextmanager
def shown(console: Console) -> Iterator[Screen]:
    """A Screen on ``console`` for the block: the cursor hidden, stderr printed above it, and the last
    lines left on the terminal at the end."""
    screen = Screen(console)
    stderr = sys.stderr
    console.show_cursor(False)
    console.push_render_hook(screen)
    sys.stderr = FileProxy(console, stderr)  # type: ignore[assignment]
    try:
        yield screen
    finally:
        sys.stderr = stderr
        console.pop_render_hook()
        console.show_cursor(True)
