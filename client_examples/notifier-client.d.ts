// Type declarations for notifier-client.mjs: every event and ack payload of docs/protocol.md.
import type { Socket } from "socket.io-client";

export type ErrorCode =
  | "AUTH_REQUIRED" | "AUTH_INVALID" | "AUTH_EXPIRED" | "FORBIDDEN" | "NOT_FOUND"
  | "INVALID_PAYLOAD" | "UNKNOWN_EVENT" | "CONFLICT" | "RATE_LIMITED" | "PAYLOAD_TOO_LARGE"
  | "UNAVAILABLE" | "INTERNAL";

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
}

export interface Notification {
  id: string;
  user_id: string;
  title: string;
  body: string | null;
  data: Record<string, unknown>;
  created_at: number;
  read: boolean;
}

export interface RoomResult extends Partial<Position> {
  joined: boolean;
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

export interface EventMap {
  session: Envelope<Session, "session">;
  notification: Envelope<Notification, "notification">;
  "notifications.unread": Envelope<{ count: number }, "notifications.unread">;
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
  "auth.expired": Envelope<ErrorBody, "auth.expired">;
  "connection.closing": Envelope<ErrorBody, "connection.closing">;
}

export interface Acks {
  subscribe: { ok: true; rooms: Record<string, RoomResult> };
  unsubscribe: { ok: true; rooms: Record<string, { left: boolean; error?: ErrorBody }> };
  ping: { ok: true; server_time: number; echo: Record<string, unknown> };
  "task.get": { ok: true; task: Task };
  "notifications.list": { ok: true; notifications: Notification[]; unread: number };
  "notifications.mark_read": { ok: true; marked: string[]; unchanged: string[]; unread: number };
  "config.set_refresh_interval": { ok: true; refresh_interval: number };
}

export interface Requests {
  subscribe: { rooms: string[]; since?: Record<string, Position> };
  unsubscribe: { rooms: string[] };
  ping: Record<string, unknown>;
  "task.get": { task_id: string };
  "notifications.list": { limit?: number; before?: string; unread_only?: boolean };
  "notifications.mark_read": { ids: string[] } | { all: true };
  "config.set_refresh_interval": { seconds: number };
}

export type ConnectionState =
  | "idle" | "connecting" | "connected" | "disconnected" | "refused" | "closed";

export interface NotifierClientOptions {
  /** A token, or a function returning one (called on every reconnect, so it may refresh). */
  token: string | (() => string | Promise<string>);
  transports?: ("polling" | "websocket")[];
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
}

export declare class NotifierError extends Error {
  code: ErrorCode;
  detail: string;
}

export declare class NotifierClient {
  constructor(url: string, options: NotifierClientOptions);
  readonly socket: Socket;
  readonly positions: Record<string, Position>;
  readonly session: Session | null;
  readonly state: ConnectionState;
  connect(): Promise<Session>;
  close(): void;
  call<E extends keyof Acks>(event: E, payload: Requests[E], timeoutMs?: number): Promise<Acks[E]>;
  subscribe(rooms: string[]): Promise<Record<string, RoomResult>>;
  unsubscribe(rooms: string[]): Promise<Acks["unsubscribe"]["rooms"]>;
  on<T extends keyof EventMap>(type: T, handler: (envelope: EventMap[T], type: T) => void): () => void;
  on(type: string, handler: (envelope: Envelope, type: string) => void): () => void;
  onState(handler: (state: ConnectionState, detail?: string) => void): () => void;
  onReset(handler: (room: string, reason: string) => void): () => void;
}
