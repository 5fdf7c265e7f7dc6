#!/usr/bin/env node
// The package's command. The TypeScript sources are compiled to dist/ by `npm install` (the
// `prepare` script), so this file only hands over to the compiled entry point.
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
