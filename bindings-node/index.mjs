// ES module entry: the same package as index.js.
import pillarbox from './index.js'

export const { connect, Broker, Worker, Job, Retry, Fatal, PillarboxError, setLogger, conformance, App, Task } = pillarbox
export default pillarbox
