import { useState } from "react";

/** Sign in by pasting a token (`uv run sinal token --sub alice`): for trying the example. */
export function SignIn({ onSignIn }: { onSignIn: (token: string) => void }) {
  const [token, setToken] = useState("");
  return (
    <section id="signin" className="signin" aria-labelledby="signin-title">
      <h2 id="signin-title">You are not signed in</h2>
      <p>
        A real app signs in through its platform. To try this one, paste a token from{" "}
        <code>uv run sinal token --sub alice</code>:
      </p>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (token.trim()) onSignIn(token);
        }}
      >
        <label htmlFor="token">Token</label>
        <input id="token" value={token} onChange={(event) => setToken(event.target.value)} autoComplete="off" />
        <button type="submit">Sign in</button>
      </form>
    </section>
  );
}
