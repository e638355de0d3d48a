// ES module entry: the same package as index.js.
import pillarbox from './index.js'

export const { connect, Broker, Worker, Job, Retry, Fatal, PillarboxError, conformance } = pillarbox
export default pillarbox
