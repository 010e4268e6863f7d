// Placeholder until the event catalog generates this file: a few events, the three exported names.

export interface EventMap {
  "notification.created": {
    notification: {
      id: string;
      user: string;
      type: string;
      title: string;
      body: string;
      data: unknown;
      severity: string;
      link: string | null;
      created: string;
      read_at: string | null;
      dismissed_at: string | null;
      expires_at: string | null;
      state: string;
      cursor: string;
    };
    unread: number;
  };
  "notification.read": { ids: string[]; unread: number };
  "execution.progress": { execution: string; seq: number; progress: number };
  "execution.error": {
    execution: string;
    seq: number;
    code: string;
    message: string;
    step: number | null;
    details: unknown;
  };
}

export type EventType = keyof EventMap;

export type SinalEvent = {
  [K in EventType]: { type: K; channel: string; data: EventMap[K]; ts: string; id?: string };
}[EventType];
