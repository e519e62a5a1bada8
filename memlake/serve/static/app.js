// The explorer's client side: no framework, Plotly for figures (served from the Python package).
const memlake = (() => {
  const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
  const fmt = v => v === null || v === undefined ? '' : (typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(4) : String(v));
  // how strongly a token is coloured: fixed scales, so colours compare across checkpoints
  const SCALE = {
    surprisal: v => Math.min(1, v / 10),
    entropy: v => Math.min(1, v / 10),
    rank: v => Math.min(1, Math.log10(1 + v) / 4),
  };
  const SCALE_LABEL = {surprisal: '0 to 10+ nats', entropy: '0 to 10+ nats', rank: 'rank 0 to 10,000+ (log scale)'};
  function table(columns, rows) {
    const head = '<tr>' + columns.map(c => `<th>${esc(c)}</th>`).join('') + '</tr>';
    const body = rows.map(r => '<tr>' + r.map(v => `<td>${esc(fmt(v))}</td>`).join('') + '</tr>').join('');
    return `<table>${head}${body}</table>`;
  }

  function instance(view) {
    if (!view.steps || !view.steps.length) return;
    const box = document.getElementById('tokens');
    box.innerHTML = view.pieces.map((p, i) => `<span data-pos="${i}"${i === 0 ? ' class=first' : ''}>${esc(p)}</span>`).join('');
    const spans = [...box.children];
    let at = view.at;
    const colour = () => {
      const metric = document.getElementById('colour').value;
      document.getElementById('colour-label').textContent = metric;
      document.getElementById('scale-label').textContent = SCALE_LABEL[metric];
      const values = at.values ? at.values[metric] : null;
      spans.forEach((s, i) => {
        const v = values && i > 0 ? values[i - 1] : null;
        s.style.background = v === null || v === undefined ? '' : `rgba(215,48,39,${SCALE[metric](v).toFixed(3)})`;
        s.title = v === null || v === undefined ? `token ${i}` : `token ${i}: ${metric} ${fmt(v)}`;
        s.dataset.value = v === null || v === undefined ? '' : v;
      });
    };
    const side = () => {
      const cont = document.getElementById('continuation');
      cont.innerHTML = (at.extraction || []).map(e => {
        const truth = view.tokens.slice(e.prompt_len, e.prompt_len + e.gen_len);
        const cells = (xs, ps) => xs.map((t, k) => `<td class="${e.generated[k] === truth[k] ? 'hit' : 'miss'}" title="id ${t}">${esc(ps[k])}</td>`).join('');
        return `<p>prompt ${e.prompt_len} tokens, ${e.gen_len} generated: match fraction <span class=num data-key="match_fraction" data-value="${e.match_fraction}">${fmt(e.match_fraction)}</span>, memorised <b>${e.memorised}</b></p>` +
          `<div style="overflow:auto"><table class=cont><tr><th>true</th>${cells(truth, view.pieces.slice(e.prompt_len, e.prompt_len + e.gen_len))}</tr>` +
          `<tr><th>greedy</th>${cells(e.generated, e.generated_pieces)}</tr></table></div>`;
      }).join('') || '<p class=muted>No extraction at this checkpoint.</p>';
      const parts = [];
      if (at.taxonomy) parts.push('<h3>Taxonomy</h3>' + table(Object.keys(at.taxonomy), [Object.values(at.taxonomy)]));
      if (at.mia && at.mia.length) parts.push('<h3>Membership-inference scores</h3>' + table(['attack', 'score'], at.mia.map(r => [r.attack, r.score])));
      document.getElementById('at').innerHTML = parts.join('') || '<p class=muted>No taxonomy or MIA rows at this checkpoint.</p>';
    };
    const slider = document.getElementById('step');
    slider.addEventListener('input', async () => {
      const step = view.steps[+slider.value];
      document.getElementById('step-label').textContent = step;
      document.getElementById('step-field').value = step;
      const r = await fetch(`/api/instance/${view.id}/at?model=${encodeURIComponent(view.model)}&step=${step}`);
      if (!r.ok) return;
      at = await r.json();
      colour(); side();
      document.body.dataset.step = step;
    });
    document.getElementById('colour').addEventListener('change', colour);
    colour(); side();
    document.body.dataset.step = view.step;
  }

  function heatmapClicks(id, checkpoint) {
    const div = document.getElementById(id);
    div.on('plotly_click', d => {
      const cohort = d.points[0].y;
      const q = new URLSearchParams({cohort: cohort});
      if (checkpoint) q.set('checkpoint', checkpoint);
      window.location = '/panel?' + q.toString();
    });
  }

  function console_() {
    const q = document.getElementById('q');
    const run = async () => {
      const status = document.getElementById('status'), err = document.getElementById('error'), grid = document.getElementById('grid');
      status.textContent = 'running…'; err.textContent = '';
      document.getElementById('csv').href = '/api/sql.csv?q=' + encodeURIComponent(q.value);
      const r = await fetch('/api/sql?q=' + encodeURIComponent(q.value));
      const body = await r.json();
      if (!r.ok) { err.textContent = body.error; grid.innerHTML = ''; status.textContent = ''; document.body.dataset.result = 'error'; return; }
      grid.innerHTML = table(body.columns, body.rows);
      status.textContent = `${body.rows.length} rows` + (body.truncated ? ' (more not shown)' : '');
      document.body.dataset.result = 'ok';
    };
    document.getElementById('run').addEventListener('click', run);
    q.addEventListener('keydown', e => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) run(); });
    document.querySelectorAll('.table-name').forEach(a => a.addEventListener('click', e => {
      e.preventDefault(); q.value = `select * from ${a.textContent} limit 20`; run();
    }));
    document.getElementById('csv').href = '/api/sql.csv?q=' + encodeURIComponent(q.value);
  }
  return {instance, heatmapClicks, console: console_};
})();
