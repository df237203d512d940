/** A small standalone SVG line chart (no dependencies): kNN top-1 against pretraining minutes. */
export interface CurvePoint {
  minutes: number;
  step: number;
  top1: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export function knnCurveSvg(points: CurvePoint[], o: { title: string; references?: { label: string; top1: number }[] }): string {
  const W = 720;
  const H = 360;
  const L = 56;
  const R = 20;
  const T = 40;
  const B = 48;
  const xMax = Math.max(1, ...points.map((p) => p.minutes));
  const refs = o.references ?? [];
  const values = [...points.map((p) => p.top1), ...refs.map((r) => r.top1)];
  const yMin = Math.max(0, Math.floor((Math.min(...values, 1) - 0.05) * 10) / 10);
  const yMax = Math.min(1, Math.ceil((Math.max(...values, 0) + 0.02) * 20) / 20);
  const X = (m: number) => L + (m / xMax) * (W - L - R);
  const Y = (v: number) => T + (1 - (v - yMin) / (yMax - yMin || 1)) * (H - T - B);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13">${esc(o.title)}</text>`,
  ];
  for (let v = yMin; v <= yMax + 1e-9; v += 0.05) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${L - 6}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(v * 100)} %</text>`);
  }
  const xStep = xMax > 30 ? 10 : xMax > 10 ? 5 : 1;
  for (let m = 0; m <= xMax + 1e-9; m += xStep) {
    parts.push(`<text x="${X(m).toFixed(1)}" y="${H - B + 18}" text-anchor="middle">${m}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">minutes of pretraining</text>`);
  parts.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#888"/><line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#888"/>`);
  refs.forEach((r, i) => {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${Y(r.top1).toFixed(1)}" y2="${Y(r.top1).toFixed(1)}" stroke="${['#c0392b', '#7f8c8d', '#27ae60'][i % 3]}" stroke-dasharray="5,4"/>`);
    parts.push(`<text x="${W - R - 4}" y="${(Y(r.top1) - 4).toFixed(1)}" text-anchor="end" fill="${['#c0392b', '#7f8c8d', '#27ae60'][i % 3]}">${esc(r.label)} ${(100 * r.top1).toFixed(1)} %</text>`);
  });
  if (points.length) {
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${X(p.minutes).toFixed(1)},${Y(p.top1).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="#3a5bd9" stroke-width="2"/>`);
    for (const p of points) parts.push(`<circle cx="${X(p.minutes).toFixed(1)}" cy="${Y(p.top1).toFixed(1)}" r="2.5" fill="#3a5bd9"><title>step ${p.step}: ${(100 * p.top1).toFixed(1)} %</title></circle>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}
