/** The Triggers and Functions bundle: what a T&F library's isolate evaluates before its code. */
