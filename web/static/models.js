// Models page: follow queued and running training jobs until they finish.
(function () {
  const table = document.getElementById('jobs');
  if (!table) return;
  const running = Array.from(table.querySelectorAll('tr[data-job]'))
    .filter((row) => ['queued', 'running'].includes(row.dataset.state));
  if (!running.length) return;
  const describe = (job) => {
    const p = job.progress || {};
    if (!p.epoch) return job.error || (p.total ? job.progress_line : '');
    // progress_line: "fold 2/5, epoch 3/15, about 6 min left" (mammosearch.train.progress)
    let text = `${job.progress_line}, loss ${p.loss.toFixed(3)}`;
    if (p['val_p@5'] !== undefined) text += `, validation P@5 ${p['val_p@5'].toFixed(3)}`;
    return text;
  };
  setInterval(async () => {
    for (const row of running) {
      const answer = await fetch(table.dataset.statusUrl + row.dataset.job);
      if (!answer.ok) continue;
      const job = await answer.json();
      row.querySelector('.state').textContent = job.state;
      row.querySelector('.stage').textContent = job.stage;
      row.querySelector('.progress').textContent = describe(job);
      if (job.state === 'done' || job.state === 'failed') window.location.reload();
    }
  }, 3000);
})();

// Models page: follow the automatic training while it runs; reload when it has finished.
(function () {
  const card = document.getElementById('auto-train');
  if (!card || !card.hasAttribute('data-under-way')) return;
  const summary = card.querySelector('.auto-summary');
  setInterval(async () => {
    const answer = await fetch(card.dataset.statusUrl);
    if (!answer.ok) return;
    const status = await answer.json();
    summary.textContent = status.summary;
    if (!status.under_way) window.location.reload();
  }, 5000);
})();
