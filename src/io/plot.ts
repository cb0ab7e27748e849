/**
 * Training curves as a standalone SVG (no dependencies): one panel per metric, train and valid
 * series drawn as polylines over the step axis.
 */

/** One series of (step, value) points. */
export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

/** A panel: a title and its series. */
export interface Panel {
  title: string;
  series: Series[];
  /** Log scale on y (for losses spanning decades). */
  logY?: boolean;
}

function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n));
  const mult = [1, 2, 5, 10].find((m) => (hi - lo) / (m * step) <= n) ?? 10;
  const s = mult * step;
  const out: number[] = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-12; v += s) out.push(+v.toPrecision(12));
  return out;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Renders panels side by side (two per row) as an SVG document. */
export function renderSvg(panels: readonly Panel[], title: string): string {
  const W = 460;
  const H = 300;
  const cols = Math.min(2, Math.max(1, panels.length));
  const rows = Math.ceil(panels.length / cols);
  const parts: string[] = [];
  const fmt = (v: number) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3) + '');
  panels.forEach((p, idx) => {
    const ox = (idx % cols) * W;
    const oy = 30 + Math.floor(idx / cols) * H;
    const L = 60, R = 15, T = 30, B = 40;
    const pts = p.series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y) && (!p.logY || y > 0));
    parts.push(`<g transform="translate(${ox},${oy})"><text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
    if (!pts.length) {
      parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no data</text></g>`);
      return;
    }
    const fy = (y: number) => (p.logY ? Math.log10(y) : y);
    let x0 = Math.min(...pts.map((q) => q[0]));
    let x1 = Math.max(...pts.map((q) => q[0]));
    let y0 = Math.min(...pts.map((q) => fy(q[1])));
    let y1 = Math.max(...pts.map((q) => fy(q[1])));
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) {
      y0 -= 0.5;
      y1 += 0.5;
    }
    x0 = Math.min(x0, 0);
    const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y: number) => T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B);
    parts.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`);
    for (const t of ticks(x0, x1)) parts.push(`<text x="${sx(t)}" y="${H - B + 15}" text-anchor="middle" font-size="10">${fmt(t)}</text>`);
    for (const t of ticks(y0, y1)) {
      const v = p.logY ? 10 ** t : t;
      parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/><text x="${L - 4}" y="${sy(v) + 3}" text-anchor="end" font-size="10">${fmt(v)}</text>`);
    }
    parts.push(`<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle" font-size="11">step</text>`);
    p.series.forEach((s, k) => {
      const ok = s.points.filter(([, y]) => Number.isFinite(y) && (!p.logY || y > 0));
      if (!ok.length) return;
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${ok.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`);
      if (ok.length === 1) parts.push(`<circle cx="${sx(ok[0]![0])}" cy="${sy(ok[0]![1])}" r="3" fill="${s.color}"/>`);
      parts.push(`<text x="${W - R - 5}" y="${T + 14 + 13 * k}" text-anchor="end" font-size="11" fill="${s.color}">${esc(s.name)}</text>`);
    });
    parts.push('</g>');
  });
  const width = cols * W;
  const height = 30 + rows * H;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15">${esc(title)}</text>${parts.join('')}</svg>\n`;
}
