import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { Root } from "./App";
import "./style.css";

const container = document.getElementById("root");
if (!container) throw new Error("no #root element");
// StrictMode mounts every component twice in development: the provider must still make one
// connection (the tests check it against the development build, dist-dev/).
createRoot(container).render(
  <StrictMode>
    <Root />
  </StrictMode>,
);
