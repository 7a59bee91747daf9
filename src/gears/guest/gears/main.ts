/** The GearsBuilder bundle: what an RG.* isolate evaluates before the user's script. */
import "./builder.js";
import "./engine.js";
