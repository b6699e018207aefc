// Evaluations page: follow an evaluation started from the page until it finishes.
(function () {
  const box = document.getElementById('evaluation-job');
  if (!box) return;
  const set = (selector, text) => { box.querySelector(selector).textContent = text; };
  const bar = box.querySelector('.job-progress');
  let timer = null;
  const poll = async () => {
    let job;
    try {
      const answer = await fetch(box.dataset.statusUrl, { headers: { Accept: 'application/json' } });
      if (!answer.ok) { set('.job-state', `unknown (HTTP ${answer.status})`); return; }
      job = await answer.json();
    } catch (error) { return; }  // the server restarting: try again next tick
    const fraction = Math.max(0, Math.min(1, job.fraction || 0));
    bar.value = fraction;
    set('.job-percent', `${Math.round(100 * fraction)}%`);
    set('.job-state', job.state);
    set('.job-stage', job.error ? `failed: ${job.error}` : (job.stage || ''));
    const runs = box.querySelector('.job-runs');
    runs.replaceChildren();
    for (const run of job.runs || []) {
      const link = document.createElement('a');
      link.href = run.url;
      link.textContent = `#${run.id} ${run.metric} (${run.status})`;
      runs.append(link, ' ');
    }
    box.dataset.state = job.state;
    if (job.state === 'done' || job.state === 'failed') {
      clearInterval(timer);
      if (job.state === 'done') {
        set('.job-stage', 'done: the new runs are listed below');
        // Reload the table once, keeping the finished job's box for its links.
        const reloaded = await fetch(window.location.href, { headers: { Accept: 'text/html' } });
        if (reloaded.ok) {
          const page = new DOMParser().parseFromString(await reloaded.text(), 'text/html');
          const fresh = page.getElementById('runs');
          const current = document.getElementById('runs');
          if (fresh && current) current.replaceWith(fresh);
          else if (fresh) { box.after(fresh); document.getElementById('no-runs')?.remove(); }
        }
      }
    }
  };
  timer = setInterval(poll, 1500);
  poll();
})();
