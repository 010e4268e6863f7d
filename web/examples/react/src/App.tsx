import { useCallback, useEffect, useState } from "react";
import { SinalProvider, useConnectionStatus } from "sinal-client/react";

import { Activity } from "./Activity";
import { savePastedToken, tokenSource } from "./auth";
import { ExecutionView } from "./ExecutionView";
import { Bell, ConnectionIndicator } from "./Header";
import { Notifications } from "./Notifications";
import { SignIn } from "./SignIn";

/** The Sinal server: this page's origin unless the build names another (VITE_SINAL_URL). */
const SINAL_URL: string = import.meta.env.VITE_SINAL_URL ?? "";

export function Root() {
  // A new sign-in remounts the provider (its `key`): a new client, nothing of the last user's.
  const [session, setSession] = useState(() => ({ version: 0, getToken: tokenSource() }));
  const signIn = useCallback((token: string) => {
    savePastedToken(token);
    setSession((last) => ({ version: last.version + 1, getToken: tokenSource() }));
  }, []);
  return (
    <SinalProvider key={session.version} url={SINAL_URL} getToken={session.getToken}>
      <App onSignIn={signIn} />
    </SinalProvider>
  );
}

function App({ onSignIn }: { onSignIn: (token: string) => void }) {
  const [executionId, openExecution] = useExecutionRoute();
  const signedOut = useConnectionStatus((status) => status.status === "signed-out");
  return (
    <>
      <header className="topbar">
        <span className="brand">Sinal</span>
        <ConnectionIndicator />
        <Bell />
      </header>
      {signedOut && <SignIn onSignIn={onSignIn} />}
      <main className="layout">
        <Notifications onOpenExecution={openExecution} />
        <div className="side">
          {executionId ? (
            <ExecutionView key={executionId} id={executionId} onOpenExecution={openExecution} />
          ) : (
            <p className="hint">Open the notification of an execution to follow it here.</p>
          )}
          <Activity />
        </div>
      </main>
    </>
  );
}

/** The execution shown, from `?execution=<id>`, and a way to show another. */
function useExecutionRoute(): [string | null, (id: string) => void] {
  const read = () => new URLSearchParams(location.search).get("execution");
  const [id, setId] = useState(read);
  useEffect(() => {
    const onPop = () => setId(read());
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);
  const open = useCallback((next: string) => {
    const url = new URL(location.href);
    url.searchParams.set("execution", next);
    history.pushState(null, "", url);
    setId(next);
  }, []);
  return [id, open];
}
