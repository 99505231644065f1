// A service worker for notifier's Web Push (docs/channels.md): it shows each push as a
// notification, reports `seen` once shown and `actioned` when clicked, and opens the page.
//
//   navigator.serviceWorker.register("/notifier-sw.js")
//     .then((registration) => navigator.serviceWorker.ready)
//     .then((registration) => client.registerPush(registration));
//
// The page's NotifierClient.registerPush() sends it the token and service URL to report with;
// they are kept in the Cache API, since a worker may be stopped between two pushes. Call
// registerPush() again when the token is renewed.

const CONFIG = "/__notifier_config";

async function saveConfig(config) {
  const cache = await caches.open("notifier");
  await cache.put(CONFIG, new Response(JSON.stringify(config)));
}

async function loadConfig() {
  const cache = await caches.open("notifier");
  const answer = await cache.match(CONFIG);
  return answer ? answer.json() : null;
}

async function report(id, receipt) {
  const config = await loadConfig();
  if (!config) return;
  await fetch(`${config.url}/api/v1/notifications/${encodeURIComponent(id)}/receipts`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${config.token}` },
    body: JSON.stringify({ ...receipt, device: "push" }),
  }).catch(() => {});  // a receipt is best effort
}

self.addEventListener("message", (event) => {
  if (event.data?.type !== "notifier.config") return;
  // Saved, then told back: a page may wait for it before anything is pushed.
  event.waitUntil(saveConfig(event.data).then(() => event.source?.postMessage({ type: "notifier.config.saved" })));
});

self.addEventListener("push", (event) => {
  const message = event.data ? event.data.json() : null;
  if (!message?.id) return;
  event.waitUntil(
    self.registration
      .showNotification(message.title, {
        body: message.body ?? "",
        tag: message.id,  // one entry per notification, even if pushed twice
        data: message,
        requireInteraction: Boolean(message.critical),
      })
      .then(() => report(message.id, { kind: "seen" })),
  );
});

self.addEventListener("notificationclick", (event) => {
  const message = event.notification.data ?? {};
  event.notification.close();
  event.waitUntil(
    Promise.all([
      report(message.id, { kind: "actioned", action: event.action || "open" }),
      self.clients.openWindow(message.data?.url ?? "/"),
    ]),
  );
});
