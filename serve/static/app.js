// imr-outcome web page: plain JavaScript, no build step, no network beyond this server.
// All case text is inserted as text nodes (never as HTML).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const LABEL_MEANING = {
    Upheld: "the denial would stand",
    Overturned: "the treatment would be approved",
  };

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, value);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(p) {
    return Math.round(p * 100) + "%";
  }

  // Text with the evidence spans of one field as <mark> elements. Spans index `text`
  // exactly; overlapping spans (not expected) keep the first, strongest-first order aside.
  function highlighted(text, field, evidence, maxWeight) {
    const container = element("p", { class: "evidence-text", "data-field": field });
    const spans = evidence
      .filter((s) => s.field === field)
      .slice()
      .sort((a, b) => a.start - b.start);
    let at = 0;
    for (const span of spans) {
      if (span.start < at || span.end > text.length) continue;
      container.append(document.createTextNode(text.slice(at, span.start)));
      const toward = span.direction;
      const tip = `Toward ${toward} \u2014 weight ${span.weight.toPrecision(3)}`;
      const mark = element(
        "mark",
        {
          class: `ev ev-${toward.toLowerCase()}`,
          tabindex: "0",
          title: tip,
          "data-tip": tip,
          "data-direction": toward,
          "data-weight": String(span.weight),
          "data-field": field,
          "data-start": String(span.start),
          "data-end": String(span.end),
        },
        text.slice(span.start, span.end)
      );
      const alpha = maxWeight > 0 ? 0.15 + 0.55 * (span.weight / maxWeight) : 0.4;
      mark.style.setProperty("--alpha", alpha.toFixed(3));
      container.append(mark);
      container.append(
        element("span", { class: "sr-only" }, ` (toward ${toward}, weight ${span.weight.toPrecision(3)})`)
      );
      at = span.end;
    }
    container.append(document.createTextNode(text.slice(at)));
    return container;
  }

  // "How similar requests fared": the rate of this kind of request with its n, and the
  // most similar past decisions with the start of each decision's own reasons.
  function renderRecord(prediction) {
    const similar = prediction.similar || [];
    if (!prediction.rate_summary && !similar.length) return [];
    const section = element("section", { class: "record", "aria-label": "How similar requests fared" });
    section.append(element("h4", {}, "How similar requests fared"));
    if (prediction.rate_summary) {
      section.append(element("p", { class: "rate-summary" }, prediction.rate_summary));
    }
    if (similar.length) {
      section.append(element("p", { class: "meta" }, "The most similar past decisions:"));
      const list = element("ol", { class: "similar" });
      for (const decision of similar) {
        const item = element("li", { "data-outcome": decision.outcome });
        const when = decision.decision_date || decision.year || "date unknown";
        item.append(
          element("p", { class: "similar-head" },
            `${decision.case_number} (${when}): \u201c${decision.request}\u201d \u2014 ` +
            `${decision.outcome} (similarity ${decision.similarity.toFixed(2)})`)
        );
        if (decision.rationale_excerpt) {
          item.append(element("p", { class: "similar-why" }, `Reason given: ${decision.rationale_excerpt}`));
        }
        list.append(item);
      }
      section.append(list);
    }
    return [section];
  }

  function renderPrediction(prediction, request, summary, options) {
    const article = element("article", { class: "prediction", "data-label": prediction.label });
    if (options.title) article.append(element("p", { class: "item-title" }, options.title));
    article.append(
      element("h3", { class: `headline label-${prediction.label}` }, prediction.headline)
    );
    article.append(
      element(
        "p",
        { class: "probabilities" },
        `Upheld (${LABEL_MEANING.Upheld}): ${percent(prediction.p_upheld)} \u00b7 ` +
          `Overturned (${LABEL_MEANING.Overturned}): ${percent(prediction.p_overturned)}`
      )
    );
    const bar = element("div", { class: "bar", "aria-hidden": "true" });
    const upheld = element("span", { class: "bar-upheld" });
    upheld.style.width = percent(prediction.p_upheld);
    const overturned = element("span", { class: "bar-overturned" });
    overturned.style.width = percent(prediction.p_overturned);
    bar.append(upheld, overturned);
    article.append(bar);
    if (prediction.band) {
      let context =
        `${prediction.relative_risk.toFixed(1)}\u00d7 the usual rate of ` +
        `${percent(prediction.base_rate)} (band: ${prediction.band}; ${prediction.band_reason}).`;
      if (prediction.band_accuracy !== null && prediction.band_accuracy !== undefined) {
        context +=
          ` On held-out letters this band was right ${percent(prediction.band_accuracy)} ` +
          `of the time (${prediction.band_support} items).`;
      }
      article.append(element("p", { class: "band", "data-band": prediction.band }, context));
    }
    let meta =
      `Model ${prediction.model_name} version ${prediction.model_version}; ` +
      `Overturned when its probability is at least ${percent(prediction.threshold)}.`;
    if (options.letterDecision) meta += ` The letter's decision: ${options.letterDecision}.`;
    article.append(element("p", { class: "meta" }, meta));

    article.append(...renderRecord(prediction));

    if (prediction.warnings.length) {
      article.append(element("h4", {}, "Warnings"));
      const list = element("ul", { class: "warnings" });
      for (const warning of prediction.warnings) list.append(element("li", {}, warning));
      article.append(list);
    }

    const evidence = prediction.evidence;
    if (options.explain) {
      const maxWeight = Math.max(0, ...evidence.map((s) => s.weight));
      article.append(element("h4", {}, evidence.length ? "Evidence" : "Evidence: none found"));
      article.append(element("p", { class: "meta" }, "Requested treatment"));
      article.append(highlighted(request, "request", evidence, maxWeight));
      if (summary) {
        const details = element("details", options.openSummary ? { open: "" } : {});
        details.append(element("summary", {}, "Case summary"));
        details.append(highlighted(summary, "summary", evidence, maxWeight));
        article.append(details);
      }
    }
    return article;
  }

  function clear() {
    $("errors").replaceChildren();
    $("results").replaceChildren();
    $("legend").hidden = true;
  }

  function showErrors(status, body, retryAfter) {
    const box = $("errors");
    box.replaceChildren();
    let title = `The server could not answer (HTTP ${status}).`;
    if (status === 503) title = `The server is busy or still loading; try again in ${retryAfter || "a few"} s.`;
    else if (status === 504) title = "The estimate took too long and was stopped:";
    else if (status === 401) title = "This server needs an API key (enter it above).";
    else if (status >= 400 && status < 500) title = "Please fix the input:";
    box.append(element("p", {}, title));
    const detail = body && Array.isArray(body.detail) ? body.detail : [];
    if (detail.length) {
      const list = element("ul");
      for (const item of detail) list.append(element("li", {}, `${item.field}: ${item.message}`));
      box.append(list);
    }
    $("status").textContent = "No estimate.";
  }

  // The API key, when the server asks for one (401): kept for this tab only.
  // If the browser refuses session storage the key lives in this page only.
  const KEY_ITEM = "imr-outcome-api-key";
  let memoryKey = "";
  let afterKey = null;

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_ITEM) || "";
    } catch (_) {
      return "";
    }
  }

  // Show the key form; `retry` runs once a key has been entered.
  function askForKey(retry, rejected) {
    try {
      sessionStorage.removeItem(KEY_ITEM);
    } catch (_) {
      /* storage disabled: the key is asked again next time */
    }
    afterKey = retry;
    $("key-error").textContent = rejected ? "That key was not accepted; check it and try again." : "";
    $("key-card").hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }

  async function submitKey(event) {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      $("key-error").textContent = "Enter the key first.";
      $("api-key").focus();
      return;
    }
    try {
      sessionStorage.setItem(KEY_ITEM, key);
    } catch (_) {
      /* storage disabled: memoryKey below keeps it for this page */
    }
    memoryKey = key;
    $("key-card").hidden = true;
    const retry = afterKey;
    afterKey = null;
    if (retry) await retry();
  }

  async function call(url, init) {
    const options = Object.assign({}, init || {});
    const headers = new Headers(options.headers || {});
    const key = storedKey() || memoryKey;
    if (key) headers.set("Authorization", `Bearer ${key}`);
    options.headers = headers;
    const response = await fetch(url, options);
    if (response.status === 401) memoryKey = "";
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return {
      ok: response.ok,
      status: response.status,
      body,
      retryAfter: response.headers.get("Retry-After"),
      sentKey: Boolean(key),
    };
  }

  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    clear();
    $("status").textContent = "Estimating\u2026";
    try {
      await work();
    } catch (error) {
      showErrors(0, { detail: [{ field: "network", message: String(error) }] });
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  async function submitCase(event) {
    event.preventDefault();
    const request = $("request").value;
    const summary = $("summary").value;
    const explain = $("explain").checked;
    if (!request.trim()) {
      clear();
      showErrors(422, { detail: [{ field: "Requested treatment", message: "is empty; describe the requested treatment" }] });
      $("request").focus();
      return;
    }
    await busy($("submit-case"), async () => {
      const result = await call("/v1/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        // a blank summary is left out (it is "none"); text without letters is refused
        body: JSON.stringify(
          summary.trim() ? { request, summary, explain, similar: true } : { request, explain, similar: true }
        ),
      });
      if (result.status === 401) {
        showErrors(401, null);
        return askForKey(() => submitCase(event), result.sentKey);
      }
      if (!result.ok) return showErrors(result.status, result.body, result.retryAfter);
      $("legend").hidden = !explain;
      $("results").append(renderPrediction(result.body, request, summary, { explain, openSummary: true }));
      $("status").textContent = result.body.headline;
      $("result").focus();
    });
  }

  async function submitLetter(event) {
    event.preventDefault();
    const file = $("letter").files[0];
    const explain = $("letter-explain").checked;
    if (!file) {
      clear();
      showErrors(422, { detail: [{ field: "IMR determination letter", message: "no file chosen; choose a .pdf or .txt letter" }] });
      $("letter").focus();
      return;
    }
    await busy($("submit-letter"), async () => {
      const form = new FormData();
      form.append("file", file);
      form.append("explain", explain ? "true" : "false");
      const result = await call("/v1/letters", { method: "POST", body: form });
      if (result.status === 401) {
        showErrors(401, null);
        return askForKey(() => submitLetter(event), result.sentKey);
      }
      if (!result.ok) return showErrors(result.status, result.body, result.retryAfter);
      const letter = result.body;
      $("legend").hidden = !explain;
      letter.items.forEach((item, n) => {
        $("results").append(
          renderPrediction(item.prediction, item.request, letter.summary, {
            explain,
            openSummary: n === 0,
            title: `Item ${n + 1} of ${letter.items.length}: ${item.request}`,
            letterDecision: item.letter_decision,
          })
        );
      });
      $("status").textContent = `${letter.items.length} item(s) estimated from ${letter.filename || "the letter"}.`;
      $("result").focus();
    });
  }

  async function showModel() {
    try {
      const result = await call("/v1/model", {});
      if (result.status === 401) {
        $("model-line").textContent = "Model: enter the API key to see it.";
        return askForKey(showModel, result.sentKey);
      }
      if (result.ok) {
        const m = result.body;
        const alias = m.alias ? ` @${m.alias}` : "";
        $("model-line").textContent = `Model: ${m.name} version ${m.version}${alias} (${m.kind}, trained ${m.created.slice(0, 10)})`;
      } else {
        $("model-line").textContent = "Model: not ready yet (reload the page in a moment).";
      }
    } catch (_) {
      $("model-line").textContent = "Model: unreachable.";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("case-form").addEventListener("submit", submitCase);
    $("letter-form").addEventListener("submit", submitLetter);
    $("key-form").addEventListener("submit", submitKey);
    showModel();
  });
})();
