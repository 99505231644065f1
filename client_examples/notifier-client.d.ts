// Type declarations for notifier-client.mjs: every event and ack payload of docs/protocol.md.
import type { Socket } from "socket.io-client";

export type ErrorCode =
  | "AUTH_REQUIRED" | "AUTH_INVALID" | "AUTH_EXPIRED" | "AUTH_REVOKED" | "FORBIDDEN"
  | "NOT_FOUND" | "INVALID_PAYLOAD" | "UNKNOWN_EVENT" | "CONFLICT" | "IDEMPOTENCY_CONFLICT"
  | "RATE_LIMITED" | "LIMIT_REACHED" | "PAYLOAD_TOO_LARGE" | "METHOD_NOT_ALLOWED" | "TIMEOUT"
  | "UNAVAILABLE" | "STORE_UNAVAILABLE" | "OUTCOME_UNKNOWN" | "INTERNAL";

export interface ErrorBody { code: ErrorCode; message: string }

export interface Position { epoch: string; offset: number }

export interface Envelope<T = Record<string, unknown>, Type extends string = string> {
  id: string;
  type: Type;
  room: string | null;
  ts: number;
  data: T;
  offset?: number;
  epoch?: string;
  replayed?: boolean;
}

export type TaskStatus = "pending" | "running" | "completed" | "failed" | "cancelled";

export interface Task {
  id: string;
  project_id: string;
  owner: string | null;
  title: string;
  status: TaskStatus;
  progress: number;
  current: number | null;
  completed: number | null;
  total: number | null;
  message: string | null;
  result: unknown;
  error: string | null;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  /** Grows with every change of the task. */
  version: number;
}

export interface Notification {
  id: string;
  user_id: string;
  title: string;
  body: string | null;
  data: Record<string, unknown>;
  created_at: number;
  read: boolean;
  category: string;
  /** Escalates during the user's quiet hours too. */
  critical: boolean;
  seen: boolean;
  archived: boolean;
  /** Hidden and not counted until then (ms); back as unread. */
  snoozed_until: number | null;
  /** Gone from the inbox then (ms). */
  expires_at: number | null;
  tags: string[];
  severity: Severity;
  /** The primary, then the secondary: a link, or an event sent back with `action()`. */
  actions: NotificationAction[];
  group_key: string | null;
  /** How many notifications this entry of its group stands for, and the latest few. */
  group_count: number;
  group_items: { id: string; title: string; created_at: number }[];
  updated_at: number | null;
}

export type Severity = "info" | "warning" | "critical";

export interface NotificationAction {
  id: string;
  label: string;
  url?: string;
  event?: Record<string, unknown>;
}

export interface InboxCounts {
  unread: number;
  unseen: number;
  /** Unread per category and per severity (zeros left out). */
  categories: Record<string, number>;
  severities: Record<string, number>;
}

export interface InboxQuery {
  state?: "all" | "active" | "unread" | "unseen" | "read" | "snoozed" | "archived";
  category?: string;
  tag?: string;
  severity?: Severity;
  group?: string;
  /** Created before (ms). */
  created_before?: number;
}

export interface InboxSet {
  read?: boolean;
  seen?: boolean;
  archived?: boolean;
  /** Back as unread at this time (ms); null: not snoozed. */
  snoozed_until?: number | null;
}

export type Channel = "webhook";

export interface QuietHours {
  /** "22:00" (24 h, in `timezone`); hours across midnight wrap. */
  start: string;
  end: string;
  /** An IANA time zone, "UTC" by default. */
  timezone?: string;
}

export interface Preferences {
  /** category -> the channels it escalates to ([] for none); others as the publisher asks. */
  channels?: Record<string, Channel[]>;
  quiet_hours?: QuietHours | null;
}

export interface RoomResult extends Partial<Position> {
  joined: boolean;
  /** project:* (every project, for `*` tokens): live events only, no position. */
  live_only?: boolean;
  error?: ErrorBody;
  task?: Task;
  recovered?: boolean;
  replayed?: number;
  reason?: "epoch_changed" | "history_truncated";
}

export interface Session {
  user_id: string;
  role: "user" | "publisher" | "admin";
  projects: string[];
  server_time: number;
  refresh_interval: number;
  unread: number;
  rooms: Record<string, RoomResult>;
}

export interface PresentUser {
  user_id: string;
  /** 0 while within the grace period after the user's last connection went. */
  connections: number;
}

export interface EventMap {
  session: Envelope<Session, "session">;
  notification: Envelope<Notification, "notification">;
  "notifications.unread": Envelope<{ count: number }, "notifications.unread">;
  "notifications.counts": Envelope<InboxCounts, "notifications.counts">;
  /** One change of many: `ids` (or, for a change of over 1000, the `filter` it used). */
  "notifications.changed": Envelope<
    { ids?: string[]; filter?: InboxQuery; set: InboxSet },
    "notifications.changed"
  >;
  "notifications.deleted": Envelope<{ ids: string[] }, "notifications.deleted">;
  "notification.updated": Envelope<{ notification: Notification }, "notification.updated">;
  "notification.recalled": Envelope<{ id: string }, "notification.recalled">;
  "task.created": Envelope<Task, "task.created">;
  "task.progress": Envelope<Task, "task.progress">;
  "task.completed": Envelope<Task, "task.completed">;
  "task.failed": Envelope<Task, "task.failed">;
  "task.cancelled": Envelope<Task, "task.cancelled">;
  refresh: Envelope<
    { reason: "interval"; interval: number } | { reason: "task_created"; task_id: string },
    "refresh"
  >;
  "config.updated": Envelope<{ refresh_interval: number }, "config.updated">;
  "auth.expiring": Envelope<{ expires_at: number }, "auth.expiring">;
  "auth.expired": Envelope<ErrorBody, "auth.expired">;
  "auth.revoked": Envelope<ErrorBody, "auth.revoked">;
  "rooms.revoked": Envelope<{ rooms: string[]; reason: ErrorBody }, "rooms.revoked">;
  "presence.joined": Envelope<{ user_id: string }, "presence.joined">;
  "presence.left": Envelope<{ user_id: string }, "presence.left">;
  "connection.closing": Envelope<ErrorBody, "connection.closing">;
}

export interface Acks {
  subscribe: { ok: true; rooms: Record<string, RoomResult> };
  unsubscribe: { ok: true; rooms: Record<string, { left: boolean; error?: ErrorBody }> };
  ping: { ok: true; server_time: number; echo: Record<string, unknown> };
  "task.get": { ok: true; task: Task };
  "notifications.list": {
    ok: true;
    notifications: Notification[];
    next_cursor: string | null;
    unread: number;
    counts: InboxCounts;
  };
  "notifications.counts": { ok: true; counts: InboxCounts };
  "notifications.change": { ok: true; changed: string[]; count: number; counts: InboxCounts };
  "notifications.delete": { ok: true; deleted: string[]; count: number; counts: InboxCounts };
  "notifications.action": { ok: true; recorded: number; action: NotificationAction };
  "notifications.mark_read": { ok: true; marked: string[]; unchanged: string[]; unread: number };
  "notifications.delivered": { ok: true; recorded: number };
  "notifications.seen": { ok: true; recorded: number };
  "notifications.actioned": { ok: true; recorded: number };
  "preferences.get": { ok: true; preferences: Preferences };
  "preferences.set": { ok: true; preferences: Preferences };
  "config.set_refresh_interval": { ok: true; refresh_interval: number };
  "auth.refresh": { ok: true; expires_at: number; rooms_revoked: string[] };
  "presence.get": { ok: true; room: string; users: PresentUser[] };
  "presence.stats": { ok: true; room: string; users: number; connections: number };
}

export interface Requests {
  subscribe: { rooms: string[]; since?: Record<string, Position>; presence?: boolean };
  unsubscribe: { rooms: string[] };
  ping: Record<string, unknown>;
  "task.get": { task_id: string };
  "notifications.list": InboxQuery & {
    limit?: number;
    /** The `next_cursor` of the page before. */
    cursor?: string;
    before?: string;
    unread_only?: boolean;
  };
  "notifications.counts": {};
  /** `ids` or `filter`, not both. */
  "notifications.change": { ids?: string[]; filter?: InboxQuery; set: InboxSet };
  /** `ids` or `filter`; neither: every archived one. */
  "notifications.delete": { ids?: string[]; filter?: InboxQuery };
  "notifications.action": { id: string; action: string };
  "notifications.mark_read": { ids: string[] } | { all: true };
  "notifications.delivered": { ids: string[] };
  "notifications.seen": { ids: string[] };
  "notifications.actioned": { id: string; action: string };
  "preferences.get": {};
  "preferences.set": Preferences;
  "config.set_refresh_interval": { seconds: number };
  "auth.refresh": { token: string };
  "presence.get": { room: string };
  "presence.stats": { room: string };
}

export type ConnectionState =
  | "idle" | "connecting" | "connected" | "disconnected" | "refused" | "closed";

export interface NotifierClientOptions {
  /** A token, or a function returning one: called on every reconnect and, when the server
   *  sends `auth.expiring`, to renew the token on the same connection (`auth.refresh`). */
  token: string | (() => string | Promise<string>);
  transports?: ("polling" | "websocket")[];
  /** The Socket.IO path, when the service is behind a path prefix: "/prefix/socket.io/". */
  path?: string;
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
  /** Report each notification received (`notifications.delivered`), batched; true by default. */
  receipts?: boolean;
  /** One connection for every tab of this origin: the tab holding a Web Lock connects and
   *  relays events and calls over a BroadcastChannel; when it closes, the next tab connects
   *  and resumes from the last position (nothing lost, nothing twice). */
  shared?: boolean;
}

export declare class NotifierError extends Error {
  code: ErrorCode;
  detail: string;
}

export declare class NotifierClient {
  constructor(url: string, options: NotifierClientOptions);
  readonly socket: Socket;
  /** Each room followed and the last position seen (null: a live-only room, project:*). */
  readonly positions: Record<string, Position | null>;
  /** Rooms whose presence.joined / presence.left this client follows (kept on reconnect). */
  readonly presenceRooms: Set<string>;
  /** When the server ends the connection unless the token is renewed (ms), once told. */
  readonly tokenExpiresAt: number | null;
  readonly session: Session | null;
  readonly state: ConnectionState;
  connect(): Promise<Session>;
  close(): void;
  call<E extends keyof Acks>(event: E, payload: Requests[E], timeoutMs?: number): Promise<Acks[E]>;
  subscribe(rooms: string[], options?: { presence?: boolean }): Promise<Record<string, RoomResult>>;
  /** Send a fresh token (from the token function) on this connection; the new expiry (ms). */
  renewToken(): Promise<number>;
  unsubscribe(rooms: string[]): Promise<Acks["unsubscribe"]["rooms"]>;
  on<T extends keyof EventMap>(type: T, handler: (envelope: EventMap[T], type: T) => void): () => void;
  on(type: string, handler: (envelope: Envelope, type: string) => void): () => void;
  onState(handler: (state: ConnectionState, detail?: string) => void): () => void;
  onReset(handler: (room: string, reason: string) => void): () => void;
  /** Web Push for this browser (see notifier-sw.js); resolves with the subscription. */
  registerPush(registration: ServiceWorkerRegistration): Promise<PushSubscription>;
  /** This device displayed them: their escalations are cancelled. */
  seen(ids: string[]): Promise<Acks["notifications.seen"]>;
  read(ids: string[]): Promise<Acks["notifications.mark_read"]>;
  actioned(id: string, action: string): Promise<Acks["notifications.actioned"]>;
}
